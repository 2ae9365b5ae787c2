"""Who computes which point: the chunk counter, signals, progress and writers of the
distributed grid engine. `run(evaluator, grid, path, done)` maps any `Evaluator` over the
points of a grid not yet done; it knows nothing of losses."""
from .contract import Evaluator
from .groups import rank_groups
from .mpi import locked_run, on_all, on_root, world
from .progress import RunSummary
from .scheduler import run

__all__ = ["Evaluator", "RunSummary", "locked_run", "on_all", "on_root", "rank_groups", "run", "world"]
