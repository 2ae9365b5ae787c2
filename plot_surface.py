#!/usr/bin/env python
"""Compute a loss surface: `mpirun -n 8 python plot_surface.py --config jobs/demo.yaml --x=-1:1:51 ...`.

Same as `landscape surface ...`; see README.md for every flag."""
import sys

from landscape.cli import surface_main

if __name__ == "__main__":
    sys.exit(surface_main())
