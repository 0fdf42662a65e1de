# What both layers' Makefiles (layers/model, layers/train) share: the Lambda platform their wheels are for and
# the Pythons that fetch and precompile them. Included after LAYER_SRC and ROOT are set.
#
# Options:   LAYER_ARCH=x86_64|arm64   LAYER_PYTHON_VERSION=3.12
#            PIP_PYTHON=<a Python ≥ 3.11 with a current pip>   (default: .venv-sam's, else python3)
#            TARGET_PYTHON=<the runtime's Python, to precompile .pyc>   (default: pyenv's or PATH's python3.12)

LAYER_ARCH ?= x86_64
LAYER_PYTHON_VERSION ?= 3.12
PIP_PYTHON ?= $(firstword $(wildcard $(ROOT)/.venv-sam/bin/python) python3)
PYENV_ROOT ?= $(shell pyenv root 2>/dev/null || echo $(HOME)/.pyenv)
TARGET_PYTHON ?= $(firstword $(wildcard $(PYENV_ROOT)/versions/$(LAYER_PYTHON_VERSION).*/bin/python$(LAYER_PYTHON_VERSION)) \
                             $(shell command -v python$(LAYER_PYTHON_VERSION) 2>/dev/null))

# Wheels for Amazon Linux 2023 (glibc 2.34), whatever the host is. pip widens each manylinux_2_NN tag to the
# older glibc versions, so these two accept every manylinux wheel the runtime can load.
PLATFORM_x86_64 := --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64
PLATFORM_arm64 := --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64
PLATFORM := $(PLATFORM_$(LAYER_ARCH))
ifeq ($(PLATFORM),)
$(error LAYER_ARCH must be x86_64 or arm64, not "$(LAYER_ARCH)")
endif

OUT = $(ARTIFACTS_DIR)/python

# Lambda-platform wheels only, into $(OUT), and no .pyc compiled by the host's Python: `... | xargs -d '\n' $(PIP_INSTALL)`
PIP_INSTALL = $(PIP_PYTHON) -m pip install --quiet --disable-pip-version-check --no-warn-conflicts \
              --no-compile --only-binary=:all: --implementation cp --python-version $(LAYER_PYTHON_VERSION) \
              $(PLATFORM) --target "$(OUT)"
