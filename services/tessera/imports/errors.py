"""The one error of ``tessera models import``: a directory that cannot become a bundle."""

from __future__ import annotations


class ImportRefused(ValueError):
    """A bad or partial model directory; the message names what is wrong and where."""
