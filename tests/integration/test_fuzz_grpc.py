"""Every public gRPC method on the gateway's port (Generation, each model contract it
forwards, grpc.health.v1), fuzzed with messages generated from the protos: edge and random
numbers (negative, int32/int64 extremes, NaN and infinities), huge repeated fields, odd
Unicode, valid requests with one or two fields changed; and raw payloads that are not the
message at all (invalid UTF-8 in strings, truncated, lengths past the end, garbage, above the
proxy's size limit). No call may end INTERNAL, UNKNOWN or past its deadline; the services are
still ready afterwards. Findings: tests/unit/gateway/test_fuzz_findings.py."""

from __future__ import annotations

import time

import grpc
import pytest

from tests.integration.fuzz.grpc_fuzz import run_method
from tests.integration.fuzz.protos import public_methods

pytestmark = [pytest.mark.integration, pytest.mark.slow]

METHODS = public_methods()
COSTLY_EXAMPLES = 10  # the samplers: every valid request runs a model
EXAMPLES = 25


@pytest.fixture(scope="module")
def big_channel(stack):
    limit = 64 * 1024 * 1024  # the client may send more than the server accepts
    options = [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
    with grpc.insecure_channel(stack["grpc"], options=options) as channel:
        yield channel


def test_every_contract_method_is_listed():
    names = {m.path.rsplit("/", 1)[1] for m in METHODS}
    assert {"Generate", "GenerateStream", "Variations", "SubmitJob", "WatchJob"} <= names
    assert {"Tokenize", "Detokenize", "SampleTokens", "SamplePrior", "SampleLatents"} <= names
    assert {"Check", "Watch"} <= names


@pytest.mark.parametrize("method", METHODS, ids=[m.path for m in METHODS])
def test_fuzz_grpc(big_channel, method):
    tally, elapsed = run_method(big_channel, method, COSTLY_EXAMPLES if method.costly else EXAMPLES)
    print(f"{method.path}: {tally.calls} calls in {elapsed:.1f}s {tally.codes}")
    assert not tally.findings, "\n".join(map(str, tally.findings))


def test_still_ready_after_fuzzing(http):
    deadline = time.monotonic() + 60
    while (r := http.get("/readyz")).status_code != 200 and time.monotonic() < deadline:
        time.sleep(1)
    assert r.status_code == 200, r.text
