"""Figures, VTK export, the textual summary and the interactive HTML report of surface files. Reads
files through landscape.io only; never imports torch, and `info`/`vtk`/`report` never load matplotlib."""
