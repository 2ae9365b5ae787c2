"""landscape: loss landscapes of neural networks (Li et al., NeurIPS 2018) on MPI clusters.

Light on import: figures and `landscape info` never import torch; the API loads on first use
(`landscape.compute_surface`, `landscape.hessian_map`, ...: see landscape.api)."""
__version__ = "0.1.0"

API = ("compute_surface", "hessian_map", "surface_job", "SurfaceResult", "HessianResult", "import_directions",
       "export_reference")


def __getattr__(name):
    if name in API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'landscape' has no attribute {name!r}")
