"""The deployment graph of the `tessera` Serve application.

``build_app(args)`` is the Serve application builder named in the Serve configs
(``import_path: tessera.app:build_app``); importing this module has no side effects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tessera import registry
from tessera.common.limits import MAX_CANDIDATES
from tessera.common.settings import get_settings


class AppArgs(BaseModel):
    """Arguments of the application builder (the Serve config's ``args``)."""

    model_config = ConfigDict(extra="forbid")

    bundle: str | None = None  # bundle name under models_dir; default: settings
    bundle_dir: str | None = None  # explicit path; wins over bundle
    device: str | None = None  # "cpu" / "cuda"; default: CUDA when the replica has a GPU
    redis_url: str | None = None  # job queue; default: TESSERA_REDIS_URL (serve: embedded)
    jobs: bool = True  # deploy the JobWorker
    # QueueConfig fields, e.g. {run_timeout_s: 900, max_depth: 5000}; the gateway and the
    # workers get the same ones (every process using the queue must agree on them).
    job_queue: dict[str, Any] = Field(default_factory=dict)
    # ar: candidates sampled per image and reranked by CLIP (the bundle must have a CLIP);
    # default: tessera.routes.pipelines.DEFAULT_AR_CANDIDATES.
    ar_candidates: int | None = Field(default=None, ge=1, le=MAX_CANDIDATES)
    # More bundles served beside the default one (names under models_dir or paths), each by
    # its own copies of the services it needs (`<Service>-<bundle>`); a request picks one
    # with `model` (docs/decisions/several-bundles.md).
    extra_bundles: list[str] = Field(default_factory=list, max_length=8)

    @field_validator("job_queue")
    @classmethod
    def _known_queue_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        from tessera.jobs.records import QueueConfig

        QueueConfig.from_dict(value)  # unknown keys and bad values fail here, not in a replica
        return value


def resolve_bundle_dir(args: AppArgs) -> Path:
    settings = get_settings()
    if args.bundle_dir:
        return Path(args.bundle_dir).resolve()
    return (settings.models_dir / (args.bundle or settings.bundle)).resolve()


def resolve_extra_bundle(spec: str) -> Path:
    """An extra bundle: a name under models_dir (when a bundle is there), else a path."""
    named = get_settings().models_dir / spec
    if (named / "model_index.json").is_file():
        return named.resolve()
    return Path(spec).resolve()


def bundle_components(bundle_dir: str | Path) -> list[str] | None:
    """The components the bundle's index lists (None when there is no readable index yet:
    every service is bound and each replica reports what is missing)."""
    from tessera.common.checkpoint import read_bundle_index
    from tessera.common.errors import ModelNotReady

    try:
        return list(read_bundle_index(Path(bundle_dir))["components"])
    except ModelNotReady:
        return None


def build_app(
    args: dict[str, Any] | None = None, deployment_options: dict[str, dict] | None = None
) -> Any:
    """Bind every deployment: each registered model service, the gateway, the job worker.

    Serve calls this with the config's ``args`` and applies the config's per-deployment
    overrides itself; ``tessera serve`` passes those overrides as ``deployment_options``.
    """
    from tessera.gateway.deployment import Gateway

    parsed = AppArgs.model_validate(args or {})
    bundle_dir = str(resolve_bundle_dir(parsed))
    device = parsed.device if parsed.device not in (None, "auto") else None
    settings = get_settings()
    redis_url = parsed.redis_url or (
        settings.redis_url.get_secret_value() if settings.redis_url else None
    )
    opts = deployment_options or {}

    def configured(deployment: Any) -> Any:
        return deployment.options(**opts.get(deployment.name, {}))

    models = {
        entry.name: configured(entry.deployment_class()).bind(bundle_dir, device)
        for entry in registry.services_for(bundle_components(bundle_dir))
    }
    peers = {}
    for spec in parsed.extra_bundles:
        from tessera.common.checkpoint import read_bundle_index
        from tessera.routes.served import bundle_slug

        extra_dir = str(resolve_extra_bundle(spec))
        name = read_bundle_index(Path(extra_dir)).get("name", Path(extra_dir).name)
        peers[name] = {"bundle_dir": extra_dir}
        for entry in registry.services_for(bundle_components(extra_dir)):
            deployment = entry.deployment_class()
            renamed = f"{deployment.name}-{bundle_slug(name)}"
            options = opts.get(renamed, opts.get(deployment.name, {}))
            peers[name][entry.name] = deployment.options(**options, name=renamed).bind(
                extra_dir, device
            )
    shared = {
        "bundle_dir": bundle_dir,
        "ar_candidates": parsed.ar_candidates,
        "peers": peers or None,
    }
    worker = None
    if parsed.jobs and redis_url:
        from tessera.jobs.deployment import JobWorker

        worker = configured(JobWorker).bind(
            redis_url, queue_config=parsed.job_queue, **shared, **models
        )
    return configured(Gateway).bind(
        redis_url=redis_url,
        queue_config=parsed.job_queue,
        job_worker=worker,
        **shared,
        **models,
    )
