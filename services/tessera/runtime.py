"""Start and stop the whole stack in this process: embedded Ray, Serve's HTTP and gRPC
proxies, and the `tessera` application configured by a Serve config YAML.

`tessera serve` and the integration tests both go through :func:`start`, so tests exercise
exactly what users run.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, get_args

import yaml

from tessera.cluster.nodes import HANDLE_ENV, NODE_ENV
from tessera.common.settings import Ingress

log = logging.getLogger("tessera")

APP_NAME = "tessera"
_EMBEDDED_REDIS: list[Any] = []  # supervised servers start() launched, stopped by stop()
# Keys of a Serve config deployment entry that `.options()` accepts as they are.
DEPLOYMENT_OPTION_KEYS = {
    "num_replicas",
    "autoscaling_config",
    "ray_actor_options",
    "max_ongoing_requests",
    "max_queued_requests",
    "user_config",
    "graceful_shutdown_timeout_s",
    "graceful_shutdown_wait_loop_s",
    "health_check_period_s",
    "health_check_timeout_s",
}


@dataclass
class StackConfig:
    """Everything :func:`start` needs; defaults come from the Serve config file."""

    serve_config: Path
    # A running cluster's GCS address ("ip:port"): deploy onto it instead of starting an
    # embedded Ray (``tessera cluster up``). The app outlives this process.
    address: str | None = None
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 9000
    metrics_port: int | None = 8080
    app_args: dict = field(default_factory=dict)  # overrides of the config's `args`
    num_cpus: int | None = None
    # Carry handle calls between replicas over gRPC (Ray 2.60), not Ray's object transport.
    grpc_handles: bool = True
    temp_dir: str | None = None
    quiet: bool = False  # tests: no driver logs, no access log, fast shutdown
    data_dir: Path | None = None  # embedded Redis lives here; default: settings.data_dir
    # "proxy": Serve's proxy actor takes HTTP and gRPC and hands each request to a Gateway
    # replica; "direct": the Gateway replica listens on the public ports itself (Serve's
    # direct ingress), one hop less. None: the settings' ``ingress``.
    ingress: Ingress | None = None
    # Direct ingress only: ports kept after the public ones for the ingress replicas of other
    # apps deployed into this Serve instance later (the integration tests deploy some). Each
    # such app answers on its own port and behind the fallback proxy (``endpoints``).
    other_apps: int = 0

    def settings(self) -> Any:
        from tessera.common.settings import get_settings

        settings = get_settings()
        if self.data_dir is not None:
            settings = settings.model_copy(update={"data_dir": self.data_dir})
        return settings


INGRESS_KINDS = get_args(Ingress)


def direct_ingress_env(http_port: int, grpc_port: int, other_apps: int = 0) -> dict[str, str]:
    """Serve's direct ingress with the public ports: the Gateway replica binds them itself.

    Serve hands an ingress replica the lowest free port of a range (the max is exclusive);
    the Gateway, deployed first, gets the first: the public port. ``other_apps`` more ports
    follow for other apps' ingress replicas. The drain period is for an external load
    balancer to deregister a stopping replica; a one-node stack has none, and 30 s would
    hold every shutdown."""
    width = 1 + other_apps
    return {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(http_port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(http_port + width),
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(grpc_port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(grpc_port + width),
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0",
        "RAY_SERVE_PORT_QUARANTINE_S": "0",
    }


def resolve_ingress(config: StackConfig) -> str:
    """``config.ingress``, else the settings' for an embedded stack; a cluster (``address``)
    keeps the proxy: its Gateways scale behind one address, which one replica's port is not."""
    ingress = config.ingress or ("proxy" if config.address else config.settings().ingress)
    if ingress not in INGRESS_KINDS:
        raise ValueError(f"ingress must be one of {INGRESS_KINDS}, got {ingress!r}")
    if ingress == "direct" and config.address:
        raise ValueError("direct ingress is for a stack this process starts (no --address)")
    return ingress


def free_port() -> int:
    """A port nothing on this machine listens on now (any interface)."""
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now (any interface, as uvicorn binds it)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError:
            return False
        return True


def check_ports_free(ports: list[int]) -> None:
    """Fail now, with the port's number, if something already listens on one of ``ports``.

    Under direct ingress Serve would otherwise hand the Gateway the next port of its range
    (when there is one) while this stack announces the configured one, or keep retrying."""
    for port in ports:
        if not port_free(port):
            raise RuntimeError(f"port {port} is in use")


def read_serve_config(path: Path) -> dict:
    with open(path) as f:
        config = yaml.safe_load(f)
    apps = [a for a in config.get("applications", []) if a.get("name") == APP_NAME]
    if not apps:
        raise ValueError(f"{path} has no application named {APP_NAME!r}")
    return config


def deployment_options(app_config: dict, quiet: bool = False) -> dict[str, dict]:
    options = {}
    for entry in app_config.get("deployments", []):
        opts = {k: v for k, v in entry.items() if k in DEPLOYMENT_OPTION_KEYS}
        if quiet:
            opts.setdefault("graceful_shutdown_timeout_s", 0)
            opts.setdefault("graceful_shutdown_wait_loop_s", 0)
        options[entry["name"]] = opts
    return options


def proxy_options(serve_config: dict, config: StackConfig) -> tuple[Any, Any]:
    """Serve's HTTP and gRPC proxy options: host and ports from ``config`` (settings and
    flags), the servicers and request timeouts from the Serve config file."""
    from ray.serve.config import HTTPOptions, gRPCOptions

    http_config = serve_config.get("http_options", {})
    grpc_config = serve_config.get("grpc_options", {})
    http = HTTPOptions(
        host=config.host,
        port=config.http_port,
        request_timeout_s=http_config.get("request_timeout_s"),
    )
    grpc = gRPCOptions(
        port=config.grpc_port,
        grpc_servicer_functions=grpc_config.get("grpc_servicer_functions", []),
        request_timeout_s=grpc_config.get("request_timeout_s"),
    )
    return http, grpc


def start(config: StackConfig) -> dict[str, Any]:
    """Start Ray + Serve and deploy; returns the endpoints. Blocks until the app is ready."""
    import ray
    from ray import serve

    from tessera.app import build_app

    serve_config = read_serve_config(config.serve_config)
    app_config = next(a for a in serve_config["applications"] if a["name"] == APP_NAME)
    env = {"RAY_AUTH_MODE": "disabled", "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    direct = resolve_ingress(config) == "direct"
    if direct:
        check_ports_free([config.http_port, config.grpc_port])
        env.update(direct_ingress_env(config.http_port, config.grpc_port, config.other_apps))
    else:  # stated: a direct stack started earlier in this process left it in os.environ
        env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "0"
    if config.grpc_handles:
        env.update(HANDLE_ENV)
    else:  # stated, so that NODE_ENV's default below does not turn it back on
        env["RAY_SERVE_USE_GRPC_BY_DEFAULT"] = "0"
    if config.quiet:
        env["RAY_SERVE_ENABLE_ACCESS_LOG"] = "0"
    os.environ.update(env)
    if not config.address:
        # the raylet this starts (and the workers it spawns) read these from the environment;
        # an operator's own value wins
        for name, value in NODE_ENV.items():
            os.environ.setdefault(name, value)
    init_kwargs: dict[str, Any] = {
        "runtime_env": {"env_vars": env},
        "log_to_driver": not config.quiet,
    }
    if config.address:
        init_kwargs["address"] = config.address
    else:
        init_kwargs["include_dashboard"] = False
        init_kwargs["_temp_dir"] = config.temp_dir or tempfile.mkdtemp(prefix="tessera-ray-")
        if config.num_cpus is not None:
            init_kwargs["num_cpus"] = config.num_cpus
        if config.metrics_port:
            init_kwargs["_metrics_export_port"] = config.metrics_port
    ray.init(**init_kwargs)
    # Direct ingress still starts Serve's proxy on the head node (its fallback): it gets
    # ports of its own, so the public ones are the Gateway's.
    proxy_config = (
        replace(config, http_port=free_port(), grpc_port=free_port()) if direct else config
    )
    http_options, grpc_options = proxy_options(serve_config, proxy_config)
    # Where proxies run comes from the profile: Serve's default starts one on every node that
    # holds a replica, which on the simulated cluster cannot bind the head's ports and keeps
    # a GPU node busy until that proxy is drained.
    serve.start(
        proxy_location=serve_config.get("proxy_location"),
        http_options=http_options,
        grpc_options=grpc_options,
    )
    args = {**app_config.get("args", {}), **config.app_args}
    if args.get("jobs", True) and not args.get("redis_url"):
        from tessera.jobs.embedded import start_redis

        # Supervised: restarted from its AOF when it dies, and gone when this process is.
        args["redis_url"], started = start_redis(config.settings(), supervise=True)
        if started is not None:
            _EMBEDDED_REDIS.append(started)
    options = deployment_options(app_config, quiet=config.quiet)
    if direct:  # one Gateway: a second would listen on a port no client knows
        gateway = options.get("Gateway", {})
        gateway = {k: v for k, v in gateway.items() if k != "autoscaling_config"}
        options["Gateway"] = {**gateway, "num_replicas": 1}
    app = build_app(args, options)
    serve.run(app, name=APP_NAME, route_prefix=app_config.get("route_prefix", "/"))
    endpoints = {
        "http": f"http://{config.host}:{config.http_port}",
        "grpc": f"{config.host}:{config.grpc_port}",
    }
    if direct:  # Serve's fallback proxy: every app of this Serve instance by route prefix
        endpoints["proxy_http"] = f"http://{config.host}:{proxy_config.http_port}"
        endpoints["proxy_grpc"] = f"{config.host}:{proxy_config.grpc_port}"
    if config.metrics_port:
        endpoints["metrics"] = f"http://127.0.0.1:{config.metrics_port}/metrics"
    return endpoints


def stop() -> None:
    """Shut Serve and Ray down, then the embedded Redis that :func:`start` started: its
    supervisor first, then the server (its AOF is flushed; queued jobs are there for the next
    start)."""
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()
        while _EMBEDDED_REDIS:
            _EMBEDDED_REDIS.pop().stop()
