"""Tessera common package."""
