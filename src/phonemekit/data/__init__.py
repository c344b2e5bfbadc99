"""Datasets: manifests, splits, the demo corpus and augmentation."""
