"""The real-data loader: the on-disk layout and catalogue, the cohort builder, features, labels, reports."""
