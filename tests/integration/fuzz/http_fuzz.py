"""The HTTP fuzzer's driver: schemathesis cases drawn from the served /openapi.json, per
operation, in two modes: schema-valid bodies (positive) and schema-violating ones (negative)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

CALL_TIMEOUT_S = 120  # a call that takes longer is a hang


@dataclass(frozen=True)
class Budget:
    """How hard one operation is fuzzed, and the 400s a schema-valid request may still get:
    what the schema cannot state (the served bundle's sizes, codebook and latent shape; bytes
    that are not an image), each stated in the field's description."""

    examples: int
    bundle_400s: tuple[str, ...] = ()


@dataclass
class Tally:
    calls: int = 0
    statuses: dict = field(default_factory=dict)
    findings: list = field(default_factory=list)

    def record(self, label: str, mode: str, status: int, finding: str | None, case: Any) -> None:
        self.calls += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if finding:
            body = repr(getattr(case, "body", None))[:300]
            self.findings.append(f"{mode} {label}: {finding} (query={case.query}, body={body})")


def load_schema(base_url: str) -> Any:
    spec = requests.get(f"{base_url}/openapi.json", timeout=30).json()
    return schemathesis.openapi.from_dict(spec)


def operations(schema: Any) -> dict[str, Any]:
    """Every operation of the schema by label ("POST /v1/tokenize")."""
    out = {}
    for result in schema.get_all_operations():
        op = result.ok()
        out[f"{op.method.upper()} {op.path}"] = op
    return out


def _cleanup(base_url: str, response: requests.Response, session: requests.Session) -> None:
    """A fuzzed job that got queued is cancelled, so the workers do not run it."""
    if response.request.method == "POST" and response.status_code == 202:
        job = response.json().get("id")
        if job:
            session.delete(f"{base_url}/v1/jobs/{job}", timeout=30)


def fuzz(
    base_url: str, label: str, op: Any, budget: Budget, mode: GenerationMode, tally: Tally
) -> None:
    session = requests.Session()
    allowed = re.compile("|".join(budget.bundle_400s)) if budget.bundle_400s else None

    @settings(
        max_examples=budget.examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: reported as drawn
        suppress_health_check=list(HealthCheck),
    )
    @given(op.as_strategy(generation_mode=mode))
    def one(case):
        start = time.perf_counter()
        try:
            response = case.call(base_url=base_url, session=session, timeout=CALL_TIMEOUT_S)
        except requests.Timeout:
            tally.record(label, mode.value, 0, f"no answer in {CALL_TIMEOUT_S}s", case)
            return
        status, finding = response.status_code, None
        if status >= 500 and not _unavailable_by_design(response):
            finding = f"{status} {response.text[:200]}"
        elif mode.is_positive and status == 400:
            message = response.json()["error"]["message"]
            if allowed is None or not allowed.search(message):
                finding = f"a schema-valid request got 400: {message}"
        elif mode.is_positive and status == 422:
            finding = "422: FastAPI's own validation error leaked past the error handler"
        tally.record(label, mode.value, status, finding, case)
        if time.perf_counter() - start > CALL_TIMEOUT_S:
            tally.record(label, mode.value, status, "took longer than the deadline", case)
        _cleanup(base_url, response, session)

    one()


def _unavailable_by_design(response: requests.Response) -> bool:
    """503 from /readyz while a model service is busy is its contract, not a crash."""
    return response.status_code == 503 and response.request.path_url.startswith("/readyz")
