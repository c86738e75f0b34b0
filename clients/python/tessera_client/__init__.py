"""Tessera client SDK: ``Client`` / ``AsyncClient`` over HTTP or gRPC, typed results, typed
errors. ``from tessera_client import Client``."""

__version__ = "0.1.0"

from tessera_client._retry import RetryPolicy  # noqa: E402
from tessera_client.client import AsyncClient, Client, GenerationOptions  # noqa: E402
from tessera_client.errors import (  # noqa: E402
    AuthError,
    Cancelled,
    ConflictError,
    DeadlineExceeded,
    InvalidRequest,
    JobFailed,
    NotFoundError,
    RateLimited,
    ServerError,
    TesseraAPIError,
    Unavailable,
)
from tessera_client.types import (  # noqa: E402
    Embeddings,
    GeneratedImages,
    Images,
    Job,
    Latent,
    ModelInfo,
    Progress,
    ProgressEvent,
    TokenGrid,
    Tokenization,
)

__all__ = [
    "AsyncClient",
    "AuthError",
    "Cancelled",
    "Client",
    "ConflictError",
    "DeadlineExceeded",
    "Embeddings",
    "GeneratedImages",
    "GenerationOptions",
    "Images",
    "InvalidRequest",
    "Job",
    "JobFailed",
    "Latent",
    "ModelInfo",
    "NotFoundError",
    "Progress",
    "ProgressEvent",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "TesseraAPIError",
    "TokenGrid",
    "Tokenization",
    "Unavailable",
    "__version__",
]
