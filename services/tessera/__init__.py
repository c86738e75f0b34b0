"""Tessera: text-to-image generation served as microservices on Ray Serve."""

__version__ = "0.1.0"
