"""The surface file (the only reader and writer), the job lock and the reference tool's files.
Never imports torch."""
import os

# landscape's own lock (io.lock) guards a file; HDF5's lock breaks under MPI-IO and on NFS and
# would stop `landscape plot` from reading a file while a job writes it. Set before h5py loads.
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")
