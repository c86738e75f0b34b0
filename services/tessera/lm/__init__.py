"""Tessera lm package."""
