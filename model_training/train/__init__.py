"""The trainer: cohort tensors, the epoch loop (single process or DDP), the three stages, the baselines, the run."""
