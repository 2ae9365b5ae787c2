# Sourced by the scripts: let OpenMPI run as root and with more ranks than cores
# (containers and CI run as root; tests oversubscribe 2 cores).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none  # no CMA inside containers
export PATH="$PWD/.venv/bin:$PATH"
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}  # numpy LAPACK threads fight the ranks for cores
