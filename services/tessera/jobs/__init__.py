"""Tessera jobs package."""
