"""Tessera client SDK: ``Client`` / ``AsyncClient`` over HTTP or gRPC, typed results, typed
errors. ``from tessera_client import Client``.

The public names: the clients, ``GenerationOptions``, ``RetryPolicy``, every exception of
:mod:`tessera_client.errors` and every result type of :mod:`tessera_client.types` (each
module's ``__all__``, re-exported here)."""

__version__ = "0.1.0"

from tessera_client import errors, types  # noqa: E402
from tessera_client._retry import RetryPolicy  # noqa: E402
from tessera_client.async_client import AsyncClient  # noqa: E402
from tessera_client.client import Client  # noqa: E402
from tessera_client.errors import *  # noqa: E402, F403
from tessera_client.options import CaptionOptions, EditOptions, GenerationOptions  # noqa: E402
from tessera_client.types import *  # noqa: E402, F403

__all__ = [
    "AsyncClient",
    "CaptionOptions",
    "Client",
    "EditOptions",
    "GenerationOptions",
    "RetryPolicy",
    "__version__",
]
__all__ += errors.__all__
__all__ += types.__all__
