# Tessera — the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-stamp
# Node tools (package.json, pinned in package-lock.json): buf lints the protos and checks them
# for breaking changes against the release baseline image.
NODE_STAMP := node_modules/.installed-stamp
BUF := node_modules/.bin/buf
PROTOS_BASELINE := protos/tessera-v1.binpb
export PYTHONUNBUFFERED := 1
export RAY_AUTH_MODE := disabled
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test test-fast lint format protos protos-check protos-lint protos-breaking \
	protos-release configs configs-check kuberay kuberay-check bench lm-bench pixel-bench mixed-bench tokenizer-bench \
	cluster-bench serve \
	clean

$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	# torch first, pinned: a CPU wheel (an unpinned torch pulls a multi-GB CUDA build)
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[dev]" -e clients/python
	touch $(STAMP)

$(NODE_STAMP): package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm not found: install Node.js (>= 18) for buf"; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

install: $(STAMP) $(NODE_STAMP)

## demo: start the stack on the committed bundle and write a sample grid from every route it
## serves (and its edits and captions when it has a mixed-modal model)
demo: $(STAMP)
	$(PY) scripts/demo.py

## test: lint, contract checks (buf lint, buf breaking), stale-generated-code checks, then the
## whole test suite
test: install lint protos-lint protos-breaking protos-check configs-check kuberay-check
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

protos: install
	$(PY) scripts/gen_protos.py

protos-check: install
	$(PY) scripts/gen_protos.py --check

## protos-lint: buf lint (STANDARD rules, protos/buf.yaml) on the contracts
protos-lint: $(NODE_STAMP)
	$(BUF) lint protos

## protos-breaking: buf breaking (FILE rules) against the last release's contracts
protos-breaking: $(NODE_STAMP)
	$(BUF) breaking protos --against $(PROTOS_BASELINE)

## protos-release: make the current contracts the baseline that protos-breaking guards
## (run when cutting a release, and commit protos/tessera-v1.binpb)
protos-release: protos-lint
	$(BUF) build protos -o $(PROTOS_BASELINE)

## configs: regenerate deploy/serve/{local,gpu,cluster-sim}.yaml from the service registry
configs: install
	$(PY) scripts/gen_serve_configs.py

configs-check: install
	$(PY) scripts/gen_serve_configs.py --check

## kuberay: regenerate deploy/kuberay/rayservice.yaml from deploy/serve/gpu.yaml and the
## node groups of services/tessera/cluster/nodes.py
kuberay: configs
	$(PY) scripts/gen_kuberay.py

kuberay-check: install
	$(PY) scripts/gen_kuberay.py --check

## serve: run the platform until Ctrl-C (HTTP :8000, gRPC :9000, metrics :8080)
serve: install
	$(VENV)/bin/tessera serve

## bench: benchmarks; results in benchmarks/results/
bench: install
	$(PY) -m benchmarks.run

## lm-bench: the LM against transformers generate() alone, in rounds (wall and CPU-time
## ratios, speculative Jacobi beside plain sampling) in benchmarks/results/lm/latest.{json,md}
lm-bench: install
	$(PY) -m benchmarks.lm_bench

## pixel-bench: the sequence-length table (pixel vs ar, measured and projected) in
## benchmarks/results/pixel_sequence_length.{json,md}
pixel-bench: install
	$(PY) -m benchmarks.pixel_costs

## mixed-bench: the mixed model's edits through the LM's engine vs request-level batching and
## the offline sampler, in benchmarks/results/mixed_engine.{json,md}
mixed-bench: install
	$(PY) -m benchmarks.mixed_engine

## tokenizer-bench: the tokenizer kinds (VQ-GAN, VQ-VAE, dVAE, KL autoencoder, VAE) trained
## with one budget, two at a time on one thread each (runs/, git-ignored), and measured in one
## run in benchmarks/results/tokenizer_kinds/<dataset>/. Twemoji: the committed tokenizer's
## recipe (6,000 steps or 25 min per kind) plus the downstream unclip row (a decoder per vq / kl
## tokenizer, 15 min each); shapes: 10 min per kind. About 1 h 50 min on two idle cores.
tokenizer-bench: install
	$(PY) -m tessera.cli data prepare twemoji
	$(PY) -m tessera.cli data prepare shapes
	$(PY) -m benchmarks.tokenizer_kinds --dataset twemoji --steps 6000 --max-minutes 25 --jobs 2 \
		--downstream-steps 8000 --downstream-minutes 15 --reference models/twemoji/tokenizer
	$(PY) -m benchmarks.tokenizer_kinds --dataset shapes --steps 6000 --max-minutes 10 --jobs 2 \
		--reference models/shapes/tokenizer

## cluster-bench: a load ramp on the simulated cluster (tessera cluster up): GPU nodes and
## replicas over time in benchmarks/results/cluster_ramp.{json,png}
cluster-bench: install
	$(PY) -m benchmarks.cluster_ramp

clean:
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache out
