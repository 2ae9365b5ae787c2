"""What one point is: the grid, directions, the θ writer, models, data, tasks and the surface
evaluator. Nothing here knows about MPI ranks or files (except core.device, one rank's device)."""
