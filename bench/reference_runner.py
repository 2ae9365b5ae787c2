"""Run the reference tool's plot_surface.py (github: tomgoldstein/loss-landscape) unmodified on
current libraries: environment-level fixes only, applied in this process before its code runs.

    mpirun -n 2 python bench/reference_runner.py /path/to/loss-landscape --mpi --model resnet20 ...

Its files are never edited nor copied; the fixes are:

- numpy ≥ 1.24 removed `np.float` (its mpi4pytorch.py uses `np.finfo(np.float)`): put back as `float`;
- numpy ≥ 1.18 refuses a float `num` in `np.linspace` (its plot_surface.py parses `--x=-1:1:11`
  into floats): `num` is passed on as an int when it is a whole number;
- HDF5 file locking (rank 0 writes the surface file while the other ranks hold it open):
  `HDF5_USE_FILE_LOCKING=FALSE`, set here for every rank before h5py is imported;
- torch ≥ 2.6 loads with `weights_only=True` by default, which refuses the pickled DataLoader of
  its `--trainloader` / `--testloader`: the default is put back to False for this process;
- torchvision (imported by its plot_surface.py, dataloader.py and cifar10/model_loader.py) has no
  CPU build here: a stand-in module with just what those import lines and its CIFAR-10 download
  call need; the data then have to come through `--trainloader` / `--testloader`;
- seaborn (imported by its plot_2D.py, used only for `--plot`) is not installed: a stand-in that
  fails if a figure is asked for.
"""
from __future__ import annotations

import os
import runpy
import sys
import types
from pathlib import Path

os.environ["HDF5_USE_FILE_LOCKING"] = "FALSE"

import numpy as np  # noqa: E402
import torch  # noqa: E402


def patch_numpy() -> None:
    if "float" not in np.__dict__:
        np.float = float  # removed in numpy 1.24
    linspace = np.linspace

    def linspace_int_num(start, stop, num=50, *args, **kwargs):
        if isinstance(num, float) and num.is_integer():
            num = int(num)
        return linspace(start, stop, num, *args, **kwargs)

    np.linspace = linspace_int_num


def patch_torch_load() -> None:
    load = torch.load

    def load_pickles(*args, **kwargs):
        kwargs.setdefault("weights_only", False)
        return load(*args, **kwargs)

    torch.load = load_pickles


class _Missing(types.ModuleType):
    """A stand-in module: any attribute beyond those set fails with a clear message."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise RuntimeError(f"{self.__name__}.{name}: {self.__name__} is a stand-in of bench/reference_runner.py "
                           "(not installed here); feed the data with --trainloader and --testloader, no --plot")


class _CIFAR10:
    """torchvision.datasets.CIFAR10 stand-in: plot_surface.py calls it once to download the data;
    with --trainloader / --testloader its dataloader.py never reads it."""

    def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
        self.root = root

    def __len__(self):
        raise RuntimeError("torchvision.datasets.CIFAR10 is a stand-in: pass --trainloader and --testloader")


def install_stand_ins() -> None:
    torchvision = _Missing("torchvision")
    datasets = _Missing("torchvision.datasets")
    datasets.CIFAR10 = _CIFAR10
    transforms = _Missing("torchvision.transforms")
    torchvision.datasets, torchvision.transforms = datasets, transforms
    torchvision.__version__ = "0+stand-in"
    sys.modules.update({"torchvision": torchvision, "torchvision.datasets": datasets,
                        "torchvision.transforms": transforms})
    if "seaborn" not in sys.modules:
        try:
            import seaborn  # noqa: F401
        except ImportError:
            sys.modules["seaborn"] = _Missing("seaborn")


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        sys.exit(__doc__)
    reference = Path(argv[0]).resolve()
    script = reference / "plot_surface.py"
    if not script.is_file():
        sys.exit(f"{script} does not exist: give the path of a checkout of tomgoldstein/loss-landscape")
    patch_numpy()
    patch_torch_load()
    install_stand_ins()
    sys.path.insert(0, str(reference))
    sys.argv = [str(script), *argv[1:]]
    if os.environ.get("REFERENCE_RUNNER_VERBOSE"):
        print(f"[reference_runner] torch {torch.__version__}, {torch.get_num_threads()} torch thread(s)", flush=True)
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
