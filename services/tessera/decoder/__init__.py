"""Tessera decoder package."""
