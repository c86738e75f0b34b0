"""Tessera tokenizer package."""
