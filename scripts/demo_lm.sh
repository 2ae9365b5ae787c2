#!/usr/bin/env bash
# The embedded language-model demo, no download: set up (idempotent); write the Python standard
# library's own sources as byte-level token files (landscape corpus); train lm_tiny, a 0.79M-parameter
# Llama, with AdamW (skipped when its last checkpoint exists); a 17x17 surface of the next-token loss
# (jobs/demo_lm.yaml) and a 5x5 Hessian map of it on 2 MPI ranks; figures in out/demo_lm/.
# Extra flags go to the surface job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/mpi_env.sh
export HF_HUB_OFFLINE=1
PY=.venv/bin/python
OUT=out/demo_lm
$PY -m landscape corpus --out_dir $OUT/data
[ -f $OUT/checkpoints/epoch_004/model.safetensors ] || $PY -m landscape train --model lm_tiny --task causal_lm \
    --dataset tokens:$OUT/data/stdlib_train.bin --seq_len 128 --epochs 4 --steps 50 --batch_size 32 \
    --out_dir $OUT/checkpoints
mpirun -n "${RANKS:-2}" $PY plot_surface.py --config jobs/demo_lm.yaml "$@"
mpirun -n "${RANKS:-2}" $PY -m landscape hessian $OUT/surface.h5 --stride 4 --subset 16 --batch_size 16 \
    --tol 1e-2 --max_iter 40
echo "[demo_lm] figures and the surface file in $OUT/ (corpus: $OUT/data/stdlib_manifest.json)"
