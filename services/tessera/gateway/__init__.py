"""Tessera gateway package."""
