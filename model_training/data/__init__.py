"""Data: the lab/vital catalogue, the simulated hospital, and the cohort loader."""
