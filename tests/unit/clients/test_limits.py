"""The SDK's copy of the public request bounds (``tessera_client/_limits.py``, which cannot
import the server) equals the server's single source (``tessera/common/limits.py``)."""

from __future__ import annotations

from tessera.common import limits as server
from tessera_client import _limits as sdk

COPIED = [name for name in vars(sdk) if name.startswith(("MAX_", "MIN_"))]


def test_the_sdk_copies_some_bounds():
    assert len(COPIED) >= 7


def test_every_copied_bound_equals_the_servers():
    for name in COPIED:
        assert hasattr(server, name), f"{name} is not a server limit"
        assert getattr(sdk, name) == getattr(server, name), name
        assert type(getattr(sdk, name)) is type(getattr(server, name)), name
