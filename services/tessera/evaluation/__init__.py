"""Evaluation only: the Twemoji judge, Fréchet distance and the bundle report."""
