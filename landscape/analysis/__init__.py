"""Analyses built on the core and the engine: Hessian eigenvalue maps (Hessian-vector
products, Lanczos), and directions from training trajectories and other models (PCA)."""
