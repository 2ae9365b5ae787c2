#!/usr/bin/env bash
# The main job on the embedded default: set up (idempotent), train the digits CNN
# if its checkpoints are missing, compute the 2D surface and the PCA trajectory
# surface and a 64-direction ensemble on 2 MPI ranks, draw them, write the
# interactive out/demo/report.html.
# Extra flags go to every job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/mpi_env.sh
PY=.venv/bin/python
[ -f out/demo/checkpoints/epoch_010.pt ] || $PY -m landscape train --out_dir out/demo/checkpoints --epochs 10
mpirun -n "${RANKS:-2}" $PY plot_surface.py --config jobs/demo.yaml "$@"
mpirun -n "${RANKS:-2}" $PY plot_surface.py --config jobs/demo_trajectory.yaml "$@"
# 64 random directions through the first and the last epoch's weights: bands, basin widths, their comparison
mpirun -n "${RANKS:-2}" $PY plot_surface.py --config jobs/demo_ensemble.yaml "$@"
mpirun -n "${RANKS:-2}" $PY plot_surface.py --config jobs/demo_ensemble.yaml --no-plot \
    --model_file out/demo/checkpoints/epoch_001.pt --surf_file out/demo/ensemble_epoch001.h5 "$@"
$PY -m landscape plot out/demo/ensemble_epoch001.h5 out/demo/ensemble_epoch010.h5 --compare \
    --titles "epoch 1,epoch 10" --out_dir out/demo >/dev/null
# the interactive page of both surfaces (Plotly, opens offline in any browser)
$PY -m landscape report out/demo/surface.h5 out/demo/trajectory.h5 --out out/demo/report.html >/dev/null
echo "[demo] figures and surface files in out/demo/"
echo "[demo] report: out/demo/report.html"
