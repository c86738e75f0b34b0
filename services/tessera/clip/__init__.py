"""Tessera CLIP package: the model, `tessera train clip`, `tessera eval clip`."""
