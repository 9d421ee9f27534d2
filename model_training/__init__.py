"""Training side: the simulated hospital, the cohort loader, the three-stage model and its export.

Kept import-light on purpose: the agent imports :mod:`model_training.artifact`, and
importing a submodule runs this file first.
"""
