"""Every HTTP operation of the served OpenAPI schema, fuzzed with schemathesis (bounded: a few
examples per operation, no shrinking). Two properties:

- no request gets a 5xx, and every call answers within the deadline (no hang, no crash:
  /readyz is still ready afterwards);
- a request the schema allows is not refused with 400, except for what the schema cannot
  state and the field's description says: the served bundle's image size, grid, codebook and
  latent shape, and bytes that are not an image (``Budget.bundle_400s``).

Each finding becomes a regression test (tests/unit/gateway/test_fuzz_findings.py).
docs/decisions/fuzzing.md has the budgets and why."""

from __future__ import annotations

import time

import pytest
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.integration.fuzz.http_fuzz import Budget, Tally, fuzz, load_schema, operations

pytestmark = [pytest.mark.integration, pytest.mark.slow]

IMAGE_BYTES = ("image is empty", "not a readable image", r"image is \d+x\d+; this model takes")
GRID = (
    "token grid is",
    "token grid has",
    "token values must be",
    "tensor shape",
    # len(tokens) == height*width and len(values) == prod(shape): not expressible in JSON
    # Schema; stated in the fields' descriptions
    r"\d+ tokens; a \d+x\d+ grid needs",
    r"\d+ values; shape \[[\d, ]+\] needs",
)
SIZE = ("size must be square", r"size \S+ is not served")
# Generations run the models: few examples (n, candidates and steps are bounded by the schema).
# A seed drawn at MAX_SEED as a JSON float (9.223372036854776e18) arrives as 2**63: past the
# bound the schema states. A float cannot carry 2**63 - 1; that is JSON, not the server.
FLOAT_SEED = r"seed: Input should be less than or equal to 9223372036854775807"
GENERATION = Budget(
    6, (*SIZE, r"steps must be in \[1, \d+\]", r"top_k must be an integer in", FLOAT_SEED)
)
# Edits and captions: a PNG of the bundle's size (and a mask of it with alpha), bytes the
# schema cannot bound (a file part), and n > 1 captions only with a temperature.
EDIT_IMAGES = (
    r"(image|mask) is empty",
    r"(image|mask) must be a PNG",
    r"(image|mask) is not a readable PNG",
    r"(image|mask) is \d+x\d+; this model edits",
    r"(image|mask) is over \d+ bytes, the limit",
    "mask must have an alpha channel",
    r"mask does not split into",
)
EDIT = Budget(6, (*SIZE, *EDIT_IMAGES, r"top_k must be in \[0, \d+\]", FLOAT_SEED))
OPERATIONS = {
    "POST /v1/images/edits": EDIT,
    "POST /v1/images/captions": Budget(
        6,
        (
            *EDIT_IMAGES,
            "n > 1 captions need temperature",
            r"temperature must be 0 \(greedy\) or at least",  # (0, 0.01): no JSON-schema form
            FLOAT_SEED,
        ),
    ),
    "POST /v1/jobs/edits": EDIT,  # queued jobs are cancelled at once, as /v1/jobs
    "POST /v1/images/generations": GENERATION,
    "POST /v1/images/variations": Budget(
        6, (*SIZE, *IMAGE_BYTES, r"steps must be in \[1, ", FLOAT_SEED)
    ),
    "POST /v1/jobs": GENERATION,  # queued jobs are cancelled at once (workers stay idle)
    "GET /v1/jobs/{job_id}": Budget(15),
    "DELETE /v1/jobs/{job_id}": Budget(15),
    "GET /v1/jobs/{job_id}/events": Budget(15),
    "GET /v1/jobs/{job_id}/images/{index}": Budget(15),
    "POST /v1/tokenize": Budget(15, IMAGE_BYTES),
    "POST /v1/detokenize": Budget(15, GRID),
    "POST /v1/embeddings/text": Budget(15),
    "POST /v1/embeddings/image": Budget(15, IMAGE_BYTES),
    "GET /v1/models": Budget(3),
    "GET /healthz": Budget(3),
    "GET /readyz": Budget(3),
}


@pytest.fixture(scope="module")
def schema(stack):
    return load_schema(stack["http"])


def test_every_operation_is_fuzzed(schema):
    """A new endpoint must get a budget here: nothing is left out silently."""
    assert set(operations(schema)) == set(OPERATIONS)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("label", list(OPERATIONS))
def test_fuzz_http(stack, schema, label, mode):
    op = operations(schema)[label]
    budget = OPERATIONS[label]
    if mode is GenerationMode.NEGATIVE and label.startswith("GET /") and "{" not in label:
        pytest.skip("no parameters, no body: nothing to violate")
    tally = Tally()
    start = time.perf_counter()
    try:
        fuzz(stack["http"], label, op, budget, mode, tally)
    except Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE, label
        # e.g. DELETE /v1/jobs/{job_id}: a string path parameter, nothing else; every value
        # fits the schema, so no negative case exists (the positive run covers the operation)
        pytest.skip(f"{label}: the schema allows every value; no negative case exists")
    elapsed = time.perf_counter() - start
    print(f"{mode.value} {label}: {tally.calls} calls in {elapsed:.1f}s {tally.statuses}")
    assert not tally.findings, "\n".join(tally.findings)


def test_still_ready_after_fuzzing(http):
    deadline = time.monotonic() + 60
    while (r := http.get("/readyz")).status_code != 200 and time.monotonic() < deadline:
        time.sleep(1)
    assert r.status_code == 200, r.text
