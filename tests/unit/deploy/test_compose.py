"""docker-compose.yml and the Dockerfiles, checked without a Docker engine: the Compose file
(after Compose's own variable interpolation) against the upstream Compose schema, plus the
properties the deployment promises."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
COMPOSE = REPO / "docker-compose.yml"
DOCKER = REPO / "deploy" / "docker"

_VAR = re.compile(
    r"\$(?:\$|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariable(ValueError):
    pass


def interpolate(value: object, env: dict[str, str]) -> object:
    """Compose's interpolation: $$, $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e}, ${VAR?e},
    ${VAR:+a}, ${VAR+a}, applied to every string value."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("braced") or m.group("bare")
        op, arg = m.group("op"), m.group("arg") or ""
        is_set = name in env
        nonempty = bool(env.get(name))
        present = nonempty if op and op.startswith(":") else is_set
        if op in (":-", "-"):
            return env[name] if present else arg
        if op in (":?", "?"):
            if not present:
                raise MissingVariable(f"{name}: {arg}")
            return env[name]
        if op in (":+", "+"):
            return arg if present else ""
        return env.get(name, "")

    return _VAR.sub(sub, value)


SECRETS = {"REDIS_PASSWORD": "r3dis-test", "GRAFANA_ADMIN_PASSWORD": "gr4fana-test"}


def load(env: dict[str, str] | None = None) -> dict:
    return interpolate(yaml.safe_load(COMPOSE.read_text()), SECRETS if env is None else env)


def test_interpolation_follows_compose():
    env = {"A": "1", "E": ""}
    assert interpolate("${A:-x}/${B:-y}/${E:-z}/${E-z}/$A/$$A/${A:+on}/${B+on}", env) == (
        "1/y/z//1/$A/on/"
    )
    with pytest.raises(MissingVariable):
        interpolate("${B:?set B}", env)


def test_compose_matches_the_upstream_schema(schemas):
    validator = jsonschema.Draft7Validator(json.loads((schemas / "compose-spec.json").read_text()))
    validator.validate(load())
    # The check has teeth: a misspelt key and a wrong type are rejected.
    broken = load()
    broken["services"]["redis"]["helthcheck"] = broken["services"]["redis"].pop("healthcheck")
    with pytest.raises(jsonschema.ValidationError, match="helthcheck"):
        validator.validate(broken)
    broken = load()
    broken["services"]["ray-gpu-worker"]["deploy"]["resources"]["reservations"]["devices"] = "gpu"
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)


def test_secrets_come_from_the_environment():
    with pytest.raises(MissingVariable, match="REDIS_PASSWORD"):
        load({"GRAFANA_ADMIN_PASSWORD": "x"})
    with pytest.raises(MissingVariable, match="GRAFANA_ADMIN_PASSWORD"):
        load({"REDIS_PASSWORD": "x"})
    # No secret literal in the file: every secret-looking variable is interpolated from the
    # host or passed through (None).
    raw = yaml.safe_load(COMPOSE.read_text())
    for name, service in raw["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|API_KEY|TOKEN|SECRET|AUTH$", key) and value is not None:
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", value), (name, key, value)
    env = load()["services"]["ray-head"]["environment"]
    assert env["TESSERA_API_KEY"] is None  # passed through from the host only when set
    assert env["TESSERA_REDIS_URL"] == "redis://:r3dis-test@redis:6379/0"
    grafana = load()["services"]["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == "gr4fana-test"


def test_services_health_checks_and_ports():
    services = load()["services"]
    assert set(services) == {"ray-head", "ray-gpu-worker", "redis", "prometheus", "grafana"}
    for name, service in services.items():
        assert service["healthcheck"]["test"], name
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)  # localhost unless TESSERA_BIND
    exposed = load({**SECRETS, "TESSERA_BIND": "0.0.0.0"})["services"]["ray-head"]["ports"]
    assert all(p.startswith("0.0.0.0:") for p in exposed)
    assert "ports" not in services["redis"]  # Redis (and Ray's 6379) stay inside the network


def test_gpu_worker_and_ray_head():
    services = load()["services"]
    worker = services["ray-gpu-worker"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert worker["environment"]["RAY_HEAD_ADDRESS"] == "ray-head:6379"
    head = services["ray-head"]
    assert head["image"] == worker["image"]  # Ray needs the same Python on every node
    assert head["build"]["dockerfile"] == "deploy/docker/Dockerfile.cuda"
    assert head["environment"]["TESSERA_SERVE_CONFIG"] == "/app/deploy/serve/gpu.yaml"
    assert (REPO / "deploy/serve/gpu.yaml").is_file()
    assert "ray-tmp:/tmp/ray" in head["volumes"]
    assert services["prometheus"]["volumes"].count("ray-tmp:/tmp/ray:ro") == 1


def test_redis_7_with_aof():
    redis = load()["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--requirepass") + 1] == "r3dis-test"
    assert any(v.endswith(":/data") for v in redis["volumes"])


def test_bind_mounts_exist():
    for name, service in load()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./") and "models" not in source:
                assert (REPO / source).exists(), (name, source)


@pytest.mark.parametrize("flavour", ["cpu", "cuda"])
def test_dockerfiles(flavour):
    text = (DOCKER / f"Dockerfile.{flavour}").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0].startswith("FROM ")
    assert "ubuntu24.04" in lines[0] or "ubuntu:24.04" in lines[0]
    torch = next(i for i, ln in enumerate(lines) if "pip install" in ln and "torch==" in ln)
    project = next(i for i, ln in enumerate(lines) if ln.startswith("RUN pip install ."))
    assert torch < project, "torch must be installed (pinned) before the project"
    if flavour == "cpu":
        assert "download.pytorch.org/whl/cpu" in lines[torch]
    users = [ln for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] != "USER root"
    for copied in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", text, re.M):
        for path in copied.split():
            assert (REPO / path).exists(), path
    ignore = (DOCKER / f"Dockerfile.{flavour}.dockerignore").read_text()
    assert ignore.splitlines()[2] == "*" or "\n*\n" in ignore  # allow-list build context
    for script in ("ray-head.sh", "ray-worker.sh"):
        assert (DOCKER / script).stat().st_mode & 0o111, script
