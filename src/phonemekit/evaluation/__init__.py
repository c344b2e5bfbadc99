"""Evaluation: predictions, honest statistics, baselines, comparisons, ensembles and held-out voice families."""
