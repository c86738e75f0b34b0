"""Model bundles: random-init stand-ins, train-all, evaluation report."""
