"""The one list of Tessera's model services.

Everything that needs to know which model services exist reads it: the application graph
(``app.build_app``), the route code's handles (``routes.handles.ModelHandles``), the
in-process stand-ins (``routes.local``), the gateway's ``/readyz`` and its gRPC forwarding of
every contract (``gateway.forwarding``), the job worker, the bundle's component list
(``common.checkpoint.COMPONENTS``), the Serve configs (``scripts/gen_serve_configs.py``) and
the KubeRay manifest (``scripts/gen_kuberay.py``).

Adding a model service: write its package (model, deployment class), its ``.proto`` in
``protos/tessera/v1/`` (its gRPC service named after the deployment plus ``Service``, as buf's
lint rules want: deployment ``Decoder``, service ``DecoderService``; then ``make protos``), and
one ``ModelService`` entry below; then ``make configs kuberay`` regenerates the deploy files
from it.

This module imports nothing heavy (no Ray, no torch): scripts and the SDK's tests read it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

PROFILES = ("local", "gpu", "cluster-sim")  # deploy/serve/<profile>.yaml

# Serve autoscaling shared by the model services. Targets are half of max_ongoing_requests
# (a full batch): every model replica batches its concurrent requests, and on a few cores a
# second replica adds no compute, only a second copy of the weights and smaller batches.
_LOCAL_SCALING = {
    "min_replicas": 1,
    "max_replicas": 2,
    "target_ongoing_requests": 16,
    "upscale_delay_s": 10,
    "downscale_delay_s": 60,
}
_GPU_SCALING = {**_LOCAL_SCALING, "max_replicas": 8, "target_ongoing_requests": 8}
# cluster-sim: the gpu profile shrunk to fit a simulated cluster on 2 real cores
# (tessera.cluster). A deployment with a GPU fraction there scales from zero, so its GPU node
# comes with load and goes when idle; short delays keep the integration test short.
# A Detokenizer call lasts milliseconds, so under steady load its sampled ongoing requests
# are often 0: scaling to zero waits for 30 s of that (measured: with a 10 s delay the replica
# flapped 1 -> 0 -> 1 under constant load), taking the max over a 10 s window.
_SIM_GPU_SCALING = {
    "min_replicas": 0,
    "max_replicas": 2,
    "target_ongoing_requests": 2,
    "metrics_interval_s": 1,
    "look_back_period_s": 10,
    "aggregation_function": "max",
    "upscale_delay_s": 1,
    "downscale_delay_s": 10,
    "downscale_to_zero_delay_s": 30,
}
_SIM_CPU_CPUS = 0.1  # what a deployment kept on the simulated head asks for


def _model_profiles(
    *,
    local_cpus: float,
    gpus: float,
    max_ongoing_requests: int,
    local: dict[str, Any],
    gpu: dict[str, Any],
    sim_gpus: float = 0.0,
) -> dict[str, dict[str, Any]]:
    """A model service's Serve options: on a laptop a CPU fraction; on a GPU cluster one CPU
    and a GPU fraction (so that one replica of every service shares one GPU). ``local`` and
    ``gpu``: its ``user_config`` (batch budgets) in each profile.

    ``cluster-sim`` is the gpu profile on a simulated cluster (``tessera cluster up``) whose
    fake GPUs have no CUDA device and whose nodes share 2 real cores: with ``sim_gpus`` the
    service asks for that GPU fraction and scales 0..2 on ``gpu-worker`` nodes; without, one
    replica stays on the head with a tenth of a CPU. Batch budgets are the laptop ones."""
    if sim_gpus:
        sim_actor: dict[str, Any] = {"num_cpus": _SIM_CPU_CPUS, "num_gpus": sim_gpus}
        sim_scaling: dict[str, Any] = {"autoscaling_config": _SIM_GPU_SCALING}
    else:
        sim_actor, sim_scaling = {"num_cpus": _SIM_CPU_CPUS}, {"num_replicas": 1}
    return {
        "local": {
            "ray_actor_options": {"num_cpus": local_cpus},
            "max_ongoing_requests": max_ongoing_requests,
            "autoscaling_config": _LOCAL_SCALING,
            "user_config": local,
        },
        "gpu": {
            "ray_actor_options": {"num_cpus": 1, "num_gpus": gpus},
            "max_ongoing_requests": max_ongoing_requests,
            "autoscaling_config": _GPU_SCALING,
            "user_config": gpu,
        },
        "cluster-sim": {
            "ray_actor_options": sim_actor,
            "max_ongoing_requests": max_ongoing_requests,
            **sim_scaling,
            "user_config": local,
        },
    }


@dataclass(frozen=True)
class ModelService:
    """One model service: a Ray Serve deployment with its own gRPC contract."""

    name: str  # the handle's name in route code and in build_app's wiring: "lm"
    deployment: str  # "module:Class" of the @serve.deployment class
    proto: str  # its contract file in protos/tessera/v1/, without ".proto": "lm"
    # the bundle components it needs (a service may also load others where the bundle has
    # them: the Detokenizer loads the CLIP when the ar route reranks, BundleInfo.ar_rerank)
    components: tuple[str, ...]
    # Serve deployment options per profile (deploy/serve/<profile>.yaml); `note` becomes a
    # comment there.
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str = ""
    # The Python package of its generated contract code (a service kept outside Tessera's
    # tree names its own).
    proto_package: str = "tessera.v1"

    @property
    def service(self) -> str:
        """The Serve deployment's name: "LanguageModel"."""
        return self.deployment.rpartition(":")[2]

    @property
    def grpc_service(self) -> str:
        """Its gRPC service's name in the .proto, by convention the deployment's name plus
        "Service" (buf's SERVICE_SUFFIX rule): "LanguageModelService"."""
        return f"{self.service}Service"

    @property
    def contract(self) -> str:
        """The full gRPC service name: "tessera.v1.LanguageModelService"."""
        return self.service_descriptor().full_name

    @property
    def servicer_function(self) -> str:
        """What Serve's gRPC proxy adds to its server (``grpc_servicer_functions``)."""
        module = f"{self.proto_package}.{self.proto}_pb2_grpc"
        return f"{module}.add_{self.grpc_service}Servicer_to_server"

    def deployment_class(self) -> Any:
        """The @serve.deployment class (imported on demand: it pulls in Ray and torch)."""
        module, _, name = self.deployment.partition(":")
        return getattr(importlib.import_module(module), name)

    def service_descriptor(self) -> Any:
        """The contract's protobuf ServiceDescriptor (its methods and message types)."""
        module = importlib.import_module(f"{self.proto_package}.{self.proto}_pb2")
        return module.DESCRIPTOR.services_by_name[self.grpc_service]


SERVICES: tuple[ModelService, ...] = (
    ModelService(
        name="tokenizer",
        deployment="tessera.tokenizer.deployment:Tokenizer",
        proto="tokenizer",
        components=("tokenizer",),
        note="VQ encoder: PNG -> token grid. Budget: pixels per batch.",
        profiles=_model_profiles(
            local_cpus=0.2,
            gpus=0.1,
            max_ongoing_requests=32,
            local={"max_batch_cost": 65536, "batch_wait_timeout_s": 0.0},
            gpu={"max_batch_cost": 262144, "batch_wait_timeout_s": 0.0},
        ),
    ),
    ModelService(
        name="detokenizer",
        deployment="tessera.tokenizer.deployment:Detokenizer",
        proto="tokenizer",
        components=("tokenizer",),
        note=(
            "VQ decoder: token grid or latents -> PNG; reranks ar candidates with the bundle's"
            " CLIP. Budget: latent cells per batch."
        ),
        profiles=_model_profiles(
            local_cpus=0.2,
            gpus=0.1,
            max_ongoing_requests=32,
            local={"max_batch_cost": 1024, "batch_wait_timeout_s": 0.0},
            gpu={"max_batch_cost": 4096, "batch_wait_timeout_s": 0.0},
            # The one model service on GPU nodes in the simulated cluster: both routes end
            # here, and it is the smallest model, so a node it needs starts fast.
            sim_gpus=0.5,
        ),
    ),
    ModelService(
        name="lm",
        deployment="tessera.lm.deployment:LanguageModel",
        proto="lm",
        components=("lm",),
        note="GPT over image tokens, continuous batching. Budget: KV-cache rows (a guided "
        "image takes 2); requests join at the next token.",
        profiles=_model_profiles(
            local_cpus=0.3,
            gpus=0.25,
            max_ongoing_requests=64,
            local={"max_rows": 128},
            gpu={"max_rows": 128},
        ),
    ),
    ModelService(
        name="prior",
        deployment="tessera.prior.deployment:Prior",
        proto="prior",
        components=("clip", "prior"),
        note="CLIP embeddings and the diffusion prior. Budgets: prior rows per step "
        "(requests join at the next step); texts and images per embedding batch.",
        profiles=_model_profiles(
            local_cpus=0.3,
            gpus=0.15,
            max_ongoing_requests=32,
            local={
                "max_rows": 64,
                "max_texts_per_batch": 64,
                "max_images_per_batch": 64,
                "batch_wait_timeout_s": 0.0,
            },
            gpu={
                "max_rows": 256,
                "max_texts_per_batch": 64,
                "max_images_per_batch": 64,
                "batch_wait_timeout_s": 0.0,
            },
        ),
    ),
    ModelService(
        name="decoder",
        deployment="tessera.decoder.deployment:Decoder",
        proto="decoder",
        components=("decoder",),
        note="Latent diffusion decoder, step-level batching. Budget: UNet rows per step; "
        "requests join at the next step.",
        profiles=_model_profiles(
            local_cpus=0.3,
            gpus=0.25,
            max_ongoing_requests=32,
            local={"max_rows": 32},
            gpu={"max_rows": 128},
        ),
    ),
    ModelService(
        name="pixel",
        deployment="tessera.pixel.deployment:PixelModel",
        proto="pixel",
        components=("pixel",),
        note="Image Transformer over sub-pixels, continuous batching (the LM's engine). Budget: "
        "KV-cache rows (a guided image takes 2, each bounded by the attention window).",
        profiles=_model_profiles(
            local_cpus=0.2,
            gpus=0.05,  # with the mixed model's 0.05: one replica of each shares one GPU
            max_ongoing_requests=32,
            local={"max_rows": 64},
            gpu={"max_rows": 256},
        ),
    ),
    ModelService(
        name="mixed",
        deployment="tessera.mixed.deployment:MixedModel",
        proto="mixed",
        components=("mixed",),
        note="One transformer over text and image tokens: text -> grids, instruction edits, "
        "captions; continuous batching (the LM's engine). Budget: KV-cache rows (an edit "
        "takes 3, a guided text -> image 2).",
        profiles=_model_profiles(
            local_cpus=0.2,
            gpus=0.05,  # one replica of every service shares one GPU (the sum stays under 1)
            max_ongoing_requests=32,
            local={"max_rows": 48},
            gpu={"max_rows": 192},
        ),
    ),
)

# The platform's own deployments, beside the model services: (Serve name, options per
# profile, note). The gateway is the ingress; the job worker pulls from Redis.
PLATFORM_DEPLOYMENTS: tuple[tuple[str, dict[str, dict[str, Any]], str], ...] = (
    (
        "Gateway",
        {
            "local": {
                "ray_actor_options": {"num_cpus": 0.1},
                "autoscaling_config": {**_LOCAL_SCALING, "target_ongoing_requests": 32},
            },
            "gpu": {
                "ray_actor_options": {"num_cpus": 0.5},
                "autoscaling_config": {**_LOCAL_SCALING, "target_ongoing_requests": 8},
            },
            "cluster-sim": {"ray_actor_options": {"num_cpus": _SIM_CPU_CPUS}, "num_replicas": 1},
        },
        "Public HTTP + gRPC ingress: validation, routes, forwarding of every contract.",
    ),
    (
        "JobWorker",
        {
            **{
                profile: {
                    "ray_actor_options": {"num_cpus": cpus},
                    "user_config": {"concurrency": 2},
                    "autoscaling_config": {
                        "min_replicas": 1,
                        "max_replicas": 4,
                        "metrics_interval_s": 2,
                        "look_back_period_s": 6,
                        "upscale_delay_s": 4,
                        "downscale_delay_s": 60,
                        "policy": {
                            "policy_function": "tessera.jobs.autoscaling:queue_depth_policy"
                        },
                    },
                }
                for profile, cpus in (("local", 0.1), ("gpu", 0.5))
            },
            "cluster-sim": {
                "ray_actor_options": {"num_cpus": _SIM_CPU_CPUS},
                "user_config": {"concurrency": 4},
                "num_replicas": 1,
            },
        },
        "Runs queued jobs from Redis; scales on queue depth.",
    ),
)


def names() -> tuple[str, ...]:
    """Handle names of every model service, in registry order."""
    return tuple(entry.name for entry in SERVICES)


def services_for(present: Iterable[str] | None) -> tuple[ModelService, ...]:
    """The services a bundle with components ``present`` can run (those whose components it
    has: an imported Kandinsky bundle has no ``lm``); None (unknown) means all."""
    if present is None:
        return SERVICES
    have = set(present)
    return tuple(entry for entry in SERVICES if set(entry.components) <= have)


def components() -> tuple[str, ...]:
    """Every bundle component some service loads, in registry order, each once."""
    return tuple(dict.fromkeys(c for entry in SERVICES for c in entry.components))


def generated_servicer_functions() -> list[str]:
    """The generated ``add_*Servicer_to_server`` of the public GenerationService, every model
    contract (the gateway forwards them), and the standard health service."""
    return [
        "tessera.v1.generation_pb2_grpc.add_GenerationServiceServicer_to_server",
        *(entry.servicer_function for entry in SERVICES),
        "grpc_health.v1.health_pb2_grpc.add_HealthServicer_to_server",
    ]


def servicer_functions() -> list[str]:
    """Serve's ``grpc_servicer_functions``: each of ``generated_servicer_functions`` through
    ``tessera.common.grpc_ingress``, which answers a payload that does not parse with
    INVALID_ARGUMENT (grpcio alone answers UNKNOWN)."""
    return [
        "tessera.common.grpc_ingress." + path.rpartition(".")[2]
        for path in generated_servicer_functions()
    ]
