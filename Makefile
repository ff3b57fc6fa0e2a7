# Two commands for a newcomer: `make demo` and `make test`. Everything else is a building block.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export KUBECONFIG_LOCAL := $(CURDIR)/.local/kubeconfig

.PHONY: venv binaries tools cluster-up cluster-down test test-unit test-trainer test-e2e lint demo

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip==25.3
	$(VPY) -m pip install -q torch==2.15.0
	$(VPY) -m pip install -q -e '.[trainer,dev,demo]'
	$(VPY) -m pip install -q --no-build-isolation deepspeed==0.19.8
	touch $(STAMP)

venv: $(STAMP)

binaries:
	hack/build-binaries.sh

tools: venv
	$(VPY) hack/tools.py

cluster-up: venv binaries tools
	$(VPY) hack/localcluster.py up

cluster-down:
	$(VPY) hack/localcluster.py down

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: venv binaries tools
	$(VPY) -m pytest -p no:cacheprovider

demo: venv binaries tools
	$(VPY) hack/demo.py
