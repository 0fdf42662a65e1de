# AWS tooling: validate, build and deploy infra/template.yaml. Included by the top Makefile; run from the
# repo root. Standalone: make -f infra/tools.mk validate|build|layer-smoke|layer-size|deploy
#
# aws-sam-cli pins its own boto3/pydantic, so SAM and cfn-lint live in their own venv (.venv-sam), never in
# .venv. Nothing here needs AWS credentials or Docker except `deploy`.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3

AWS_SAM_CLI_VERSION := 1.170.0
CFN_LINT_VERSION := 1.58.0

SAM_VENV := .venv-sam
SAM_BIN := $(SAM_VENV)/bin
SAM_STAMP := $(SAM_VENV)/.installed-$(AWS_SAM_CLI_VERSION)-$(CFN_LINT_VERSION)
TEMPLATE := infra/template.yaml
# absolute: SAM resolves a relative --config-file against the template's folder (.aws-sam/build for deploy)
SAM_CONFIG := $(CURDIR)/infra/samconfig.toml
BUILT_TEMPLATE := .aws-sam/build/template.yaml
LAYER_BUILD_DIR := .aws-sam/build/ModelLayer/python
TRAIN_LAYER_BUILD_DIR := .aws-sam/build/TrainLayer/python

# Lambda architecture for `build` (layer wheels + function architecture); deploy with the same
# Architecture parameter. arm64 is untested (onnxruntime#10038).
LAMBDA_ARCH ?= x86_64
# sam/cfn-lint need a region, never credentials (except deploy); no telemetry from CI.
SAM_ENV := AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} SAM_CLI_TELEMETRY=0

# The layer smoke test runs the layer with the Lambda runtime's Python, plus a directory holding what the
# runtime itself provides (boto3, and snapshot_restore_py for SnapStart hooks, at pyproject's pins). Recursive (=)
# so pyenv is only asked when needed.
LAMBDA_PYTHON = $(firstword $(wildcard $(shell pyenv root 2>/dev/null)/versions/3.12.*/bin/python3.12) \
                            $(shell command -v python3.12 2>/dev/null))
LAMBDA_RUNTIME_DIR := $(SAM_VENV)/lambda-runtime
LAMBDA_RUNTIME_STAMP := $(LAMBDA_RUNTIME_DIR)/.installed

.PHONY: validate build layer-smoke layer-size deploy

$(SAM_STAMP):
	@test -x $(SAM_BIN)/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(SAM_BIN)/python -m pip install --quiet --disable-pip-version-check \
	  aws-sam-cli==$(AWS_SAM_CLI_VERSION) cfn-lint==$(CFN_LINT_VERSION)
	@rm -f $(SAM_VENV)/.installed-* && touch $@

$(LAMBDA_RUNTIME_STAMP): pyproject.toml | $(SAM_STAMP)
	rm -rf $(LAMBDA_RUNTIME_DIR)
	$(SAM_BIN)/python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print(*[d for d in p["dependencies"] + p["optional-dependencies"]["dev"] if d.startswith(("boto3==", "snapshot-restore-py"))], sep="\n")' \
	  | xargs -d '\n' $(SAM_BIN)/python -m pip install --quiet --disable-pip-version-check --no-warn-conflicts \
	      --no-compile --target $(LAMBDA_RUNTIME_DIR)
	@touch $@

validate: $(SAM_STAMP) ## cfn-lint and sam validate --lint on infra/template.yaml (offline)
	$(SAM_ENV) $(SAM_BIN)/cfn-lint $(TEMPLATE)
	$(SAM_ENV) $(SAM_BIN)/sam validate --lint -t $(TEMPLATE) --config-file $(SAM_CONFIG)

# An arm64 layer's native libraries cannot load on an x86_64 host (and vice versa): then the smoke test is
# skipped, loudly, and the layer ships untested.
LAMBDA_MACHINE := $(if $(filter arm64,$(LAMBDA_ARCH)),aarch64,$(LAMBDA_ARCH))

# "--handler <built code dir>:<module.function>" for every function of the built template on layer $LAYER
define BUILT_HANDLERS
import os, yaml
build = ".aws-sam/build"
for resource in yaml.safe_load(open(f"{build}/template.yaml"))["Resources"].values():
    if resource["Type"] == "AWS::Serverless::Function":
        properties = resource["Properties"]
        if any(os.environ["LAYER"] in str(layer) for layer in properties.get("Layers", [])):
            print(f"--handler {build}/{properties['CodeUri']}:{properties['Handler']}")
endef
export BUILT_HANDLERS

define LAYER_SMOKE
	@test -n "$(LAMBDA_PYTHON)" || { echo "layer-smoke needs python3.12 (the Lambda runtime's): pyenv install 3.12"; exit 1; }
	@if [ "$$(uname -m)" != "$(LAMBDA_MACHINE)" ]; then \
	  echo "WARNING: layer-smoke SKIPPED: a $(LAMBDA_ARCH) layer cannot run on this $$(uname -m) host"; \
	else \
	  smoke="$(LAMBDA_PYTHON) -I -S infra/layer_smoke.py $(LAYER_BUILD_DIR) --runtime $(LAMBDA_RUNTIME_DIR)"; \
	  smoke="$$smoke $$(LAYER=ModelLayer $(SAM_BIN)/python -c "$$BUILT_HANDLERS" | tr '\n' ' ')"; \
	  echo "$$smoke" && $$smoke; \
	  smoke="$(LAMBDA_PYTHON) -I -S infra/train_layer_smoke.py $(TRAIN_LAYER_BUILD_DIR) --runtime $(LAMBDA_RUNTIME_DIR)"; \
	  smoke="$$smoke $$(LAYER=TrainLayer $(SAM_BIN)/python -c "$$BUILT_HANDLERS" | tr '\n' ' ')"; \
	  echo "$$smoke" && $$smoke; \
	fi
endef

# The layer's budget (issue 12): 120 MiB unzipped, in Lambda's own unit (its 250 MB limit is 262,144,000 bytes).
# `make build` fails above it, so growth is a decision rather than a surprise.
LAYER_BUDGET_MIB ?= 120
# The training layer's: Lambda's whole limit (262,144,000 bytes = 250 MiB) less room for the handler.
TRAIN_LAYER_BUDGET_MIB ?= 245

define LAYER_SIZE
	@test -d $(LAYER_BUILD_DIR) || { echo "no built layer: make build"; exit 1; }
	@du -sb $(LAYER_BUILD_DIR) | awk '{printf "ModelLayer unzipped: %d bytes = %.2f MiB = %.1f MB (budget %d MiB; Lambda: 250 MiB for all layers + code)\n", $$1, $$1 / 1048576, $$1 / 1e6, $(LAYER_BUDGET_MIB)}'
	@cd $(LAYER_BUILD_DIR) && du -sb -- * | sort -rn | head -14 | awk '{printf "  %8.2f MiB  %s\n", $$1 / 1048576, $$2}'
	@cd $(LAYER_BUILD_DIR) && find . -name '*.onnx' -printf '%s\n' | awk '{s += $$1} END {printf "  of which: %.2f MiB ONNX model, ", s / 1048576}'
	@cd $(LAYER_BUILD_DIR) && find . -name '*.pyc' -printf '%s\n' | awk '{s += $$1} END {printf "%.2f MiB bytecode, ", s / 1048576}'
	@cd $(LAYER_BUILD_DIR) && find . -name '*.so*' -printf '%s\n' | awk '{s += $$1} END {printf "%.2f MiB shared libraries\n", s / 1048576}'
	@test $$(du -sb $(LAYER_BUILD_DIR) | cut -f1) -le $$(( $(LAYER_BUDGET_MIB) * 1048576 )) \
	  || { echo "ModelLayer is over its budget of $(LAYER_BUDGET_MIB) MiB (layers/model/Makefile slims it)"; exit 1; }
	@# TrainFunction has TrainLayer alone: it must fit Lambda's limit for a function's code + layers by itself.
	@test -d $(TRAIN_LAYER_BUILD_DIR) || { echo "no built training layer: make build"; exit 1; }
	@du -sb $(TRAIN_LAYER_BUILD_DIR) | awk '{printf "TrainLayer unzipped: %d bytes = %.2f MiB = %.1f MB (TrainFunction\047s only layer; Lambda: 250 MiB for layers + code)\n", $$1, $$1 / 1048576, $$1 / 1e6}'
	@cd $(TRAIN_LAYER_BUILD_DIR) && du -sb -- * | sort -rn | head -8 | awk '{printf "  %8.2f MiB  %s\n", $$1 / 1048576, $$2}'
	@test $$(du -sb $(TRAIN_LAYER_BUILD_DIR) | cut -f1) -le $$(( $(TRAIN_LAYER_BUDGET_MIB) * 1048576 )) \
	  || { echo "TrainLayer is over $(TRAIN_LAYER_BUDGET_MIB) MiB (layers/train/Makefile slims it)"; exit 1; }
endef

build: $(SAM_STAMP) $(LAMBDA_RUNTIME_STAMP) ## sam build (no Docker), then smoke-test the model layer and print its size
	$(SAM_ENV) LAYER_ARCH=$(LAMBDA_ARCH) $(SAM_BIN)/sam build -t $(TEMPLATE) --config-file $(SAM_CONFIG) \
	  --parameter-overrides Architecture=$(LAMBDA_ARCH)
	$(LAYER_SMOKE)
	$(LAYER_SIZE)

layer-smoke: $(SAM_STAMP) $(LAMBDA_RUNTIME_STAMP) ## import and classify from the built layer with Python 3.12, isolated from .venv
	@test -d $(LAYER_BUILD_DIR) || { echo "no built layer: make build"; exit 1; }
	$(LAYER_SMOKE)

layer-size: ## the built layer's unzipped size and biggest parts
	$(LAYER_SIZE)

deploy: build ## sam deploy --guided (needs AWS credentials; answers are saved in infra/samconfig.toml)
	$(SAM_BIN)/sam deploy --guided -t $(BUILT_TEMPLATE) --config-file $(SAM_CONFIG)
