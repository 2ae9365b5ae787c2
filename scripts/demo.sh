#!/usr/bin/env bash
# The main job on the embedded default: set up (idempotent), train the digits CNN
# if its checkpoints are missing, compute the 2D surface and the PCA trajectory
# surface on 2 MPI ranks, draw them, write the interactive out/demo/report.html.
# Extra flags go to both jobs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/mpi_env.sh
PY=.venv/bin/python
[ -f out/demo/checkpoints/epoch_010.pt ] || $PY -m landscape train --out_dir out/demo/checkpoints --epochs 10
mpirun -n "${RANKS:-2}" $PY plot_surface.py --config jobs/demo.yaml "$@"
mpirun -n "${RANKS:-2}" $PY plot_surface.py --config jobs/demo_trajectory.yaml "$@"
# the interactive page of both surfaces (Plotly, opens offline in any browser)
$PY -m landscape report out/demo/surface.h5 out/demo/trajectory.h5 --out out/demo/report.html >/dev/null
echo "[demo] figures and surface files in out/demo/"
echo "[demo] report: out/demo/report.html"
