"""Figures, VTK export and the textual summary of surface files. Reads files through
landscape.io only; never imports torch, and `info`/`vtk` never load matplotlib."""
