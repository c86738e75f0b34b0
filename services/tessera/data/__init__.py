"""Tessera data package."""
