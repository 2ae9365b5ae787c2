"""landscape: loss landscapes of neural networks (Li et al., NeurIPS 2018) on MPI clusters.

Light on import: plotting never imports torch; `compute_surface` loads on first use."""
__version__ = "0.1.0"


def __getattr__(name):
    if name in ("compute_surface", "Surface"):
        from . import surface

        return getattr(surface, name)
    raise AttributeError(f"module 'landscape' has no attribute {name!r}")
