#!/usr/bin/env bash
# Set up (idempotent) and run the test suite, real mpirun runs included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/mpi_env.sh
exec .venv/bin/python -m pytest -q tests "$@"
