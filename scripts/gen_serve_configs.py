"""Generate the Serve configs deploy/serve/{local,gpu,cluster-sim}.yaml from the registry.

    python scripts/gen_serve_configs.py            # write both files
    python scripts/gen_serve_configs.py --check    # exit 1 if a committed file is stale (CI)

Every deployment's options come from ``tessera.registry`` (model services and the platform's
Gateway and JobWorker), so a new service appears in both profiles, in the gRPC proxy's
servicer list, and then in the KubeRay manifest (``scripts/gen_kuberay.py`` reads gpu.yaml),
from its one registry entry. What differs per profile around the deployments (proxies,
bind address, device) is stated here.

To run with other settings, copy a generated file and pass it to ``tessera serve --config``.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import Any

import yaml

from tessera import registry

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "deploy" / "serve"

REQUEST_TIMEOUT_S = 300
TIMEOUT_NOTE = (
    "A request still running after request_timeout_s is ended by the proxy (HTTP 408, gRPC\n"
    "DEADLINE_EXCEEDED) and cancelled in the replicas, so a stuck replica cannot hold a client\n"
    "forever. Long work belongs in async jobs (/v1/jobs), bounded by the queue's run_timeout_s."
)

PROFILES: dict[str, dict[str, Any]] = {
    "local": {
        "about": (
            "Serve config for a laptop (CPU only). Resources are CPU fractions so that every\n"
            "deployment fits on a 2-core machine; autoscaling is per deployment. The targets\n"
            "are high on purpose: every model replica batches its concurrent requests, and on\n"
            "a few cores a second replica adds no compute, only a second copy of the weights,\n"
            "smaller batches and a startup that takes CPU from the running ones."
        ),
        "proxy_location": "HeadOnly",
        "host": "127.0.0.1",
        "args": {"bundle": "twemoji", "device": "cpu"},
    },
    "gpu": {
        "about": (
            "Serve config for a GPU cluster (KubeRay). Model deployments take GPU fractions so\n"
            "that several share one GPU; the autoscaler adds GPU workers when replicas do not\n"
            "fit."
        ),
        "proxy_location": "EveryNode",
        "host": "0.0.0.0",
        "args": {"bundle": "twemoji", "device": "cuda"},
    },
    "cluster-sim": {
        "about": (
            "Serve config for an autoscaling Ray cluster whose GPU nodes come and go: the gpu\n"
            "profile shrunk to fit the simulated cluster of `tessera cluster up` on 2 cores\n"
            "(node groups: tessera/cluster/nodes.py). The Detokenizer asks for half a GPU and\n"
            "scales from zero, so a `gpu-worker` node joins under load and leaves when idle;\n"
            "the rest run once each on the head. `device: auto` picks CUDA where a replica\n"
            "sees one (a real cluster) and the CPU otherwise (the simulation's fake GPUs).\n"
            "Proxies stay on the head: simulated nodes share one host and its ports."
        ),
        "proxy_location": "HeadOnly",
        "host": "127.0.0.1",
        "args": {
            "bundle": "twemoji",
            "device": "auto",
            # A job whose worker died is reclaimed after 10 s, not 30.
            "job_queue": {"visibility_timeout_s": 10},
        },
    },
}


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.ignore_aliases = lambda self, data: True  # noqa: ARG005 - plain, anchor-free output


def _dump(value: Any, indent: int) -> str:
    text = yaml.dump(value, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=96)
    pad = " " * indent
    return "".join(pad + line if line.strip() else line for line in text.splitlines(True))


def _comment(text: str, indent: int) -> str:
    pad = " " * indent
    return "".join(f"{pad}# {line}".rstrip() + "\n" for line in text.splitlines())


def deployments(profile: str) -> list[tuple[str, dict[str, Any]]]:
    """(note, Serve deployment entry) for every deployment of ``profile``, platform first."""
    out = [
        (note, {"name": name, **options[profile]})
        for name, options, note in registry.PLATFORM_DEPLOYMENTS
    ]
    out += [
        (entry.note, {"name": entry.service, **entry.profiles[profile]})
        for entry in registry.SERVICES
    ]
    return out


def render(profile: str) -> str:
    frame = PROFILES[profile]
    head = {
        "proxy_location": frame["proxy_location"],
        "http_options": {
            "host": frame["host"],
            "port": 8000,
            "request_timeout_s": REQUEST_TIMEOUT_S,
        },
        "grpc_options": {
            "port": 9000,
            "request_timeout_s": REQUEST_TIMEOUT_S,
            "grpc_servicer_functions": registry.servicer_functions(),
        },
    }
    app = {
        "name": "tessera",
        "route_prefix": "/",
        "import_path": "tessera.app:build_app",
        "args": frame["args"],
    }
    text = _comment(
        f"GENERATED by scripts/gen_serve_configs.py from tessera/registry.py. Do not edit by\n"
        f"hand: change the registry (or the script), then run `make configs`.\n\n"
        f"{frame['about']}\nFields here override the code defaults in tessera/app.py.\n\n"
        f"{TIMEOUT_NOTE}",
        0,
    )
    text += _dump(head, 0) + "applications:\n"
    text += _dump([app], 2) + "    deployments:\n"
    for note, entry in deployments(profile):
        text += _comment(note, 6) + _dump([entry], 6)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is stale")
    args = parser.parse_args(argv)
    stale = False
    for profile in PROFILES:
        path = OUT_DIR / f"{profile}.yaml"
        want = render(profile)
        have = path.read_text() if path.exists() else ""
        if args.check:
            if have != want:
                stale = True
                sys.stdout.writelines(
                    difflib.unified_diff(
                        have.splitlines(True), want.splitlines(True), str(path), "generated"
                    )
                )
        elif have != want:
            path.write_text(want)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print("deploy/serve is stale: run `make configs`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
