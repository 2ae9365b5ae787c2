"""The command line (`landscape ...`, plot_surface.py): parsing and printing only."""
from .main import main, surface_main

__all__ = ["main", "surface_main"]
