"""Tessera prior package."""
