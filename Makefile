# Two commands for a newcomer: `make demo` and `make test`. Everything else is a building block.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml trainer-image/requirements-s3.txt | sha256sum | cut -c1-12)

.PHONY: venv system-packages binaries objectstore tools images test-deps cluster-up cluster-down test test-unit test-e2e test-trainer test-chart lint generate demo bench

# One goal (`make test`, `make demo`, ...) builds its building blocks side by side: the Go builds keep the
# CPU busy while the venv and the images mostly wait on the network and the disk, so a cold start takes
# the longest of them rather than their sum. Several goals on one command line keep their order
# (`make cluster-down cluster-up`). `make -j1 test` builds one thing at a time.
ifeq ($(words $(MAKECMDGOALS)),1)
MAKEFLAGS += --jobs=4
endif

$(STAMP): pyproject.toml trainer-image/requirements-s3.txt
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip==25.3
	$(VPY) -m pip install -q torch==2.15.0
	$(VPY) -m pip install -q -e '.[trainer,dev,demo]'
	$(VPY) -m pip install -q --no-deps -r trainer-image/requirements-s3.txt
	$(VPY) -m pip install -q --no-build-isolation deepspeed==0.19.8
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

# Debian packages (Prometheus, containerd, runc, buildah, debootstrap, CNI plugins), only when missing.
system-packages:
	@hack/system-packages.sh

# Kubernetes, etcd and kwok from Go modules, cached in ~/.cache/finetune-operator (cold: ~12 min).
binaries:
	@mkdir -p .local
	@hack/build-binaries.sh > .local/build-binaries.log 2>&1 || { echo "binary build failed; last lines:"; tail -40 .local/build-binaries.log; exit 1; }

# The tests' S3-compatible object store (versitygw, Apache-2.0) from its Go module, cached beside them
# (cold: ~2 min on 2 cores).
objectstore:
	@mkdir -p .local
	@hack/build-objectstore.sh > .local/build-objectstore.log 2>&1 || { echo "object store build failed; last lines:"; tail -40 .local/build-objectstore.log; exit 1; }

# The operator and CPU trainer images, built with buildah from the Dockerfiles (no Docker, no registry),
# cached by content hash in ~/.cache/finetune-operator/images (cold: ~10 minutes, warm: seconds).
# hack/images.py needs only the standard library: it runs with $(PY), so the images build while the
# venv installs.
images: system-packages
	$(PY) hack/images.py build

tools: venv
	@$(VPY) hack/tools.py > /dev/null

# The control plane, kwok's fake GPU/CPU nodes, and one real node (kubelet + containerd) running our images.
cluster-up: system-packages venv binaries tools images
	$(VPY) hack/localcluster.py up --real-node --gpus 2

cluster-down:
	$(VPY) hack/localcluster.py down

generate: venv
	$(VPY) -m finetune_operator.crdgen
	$(VPY) -m finetune_operator.apidocs

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	PYTHONPATH=$(CURDIR)/api:$(CURDIR)/operator:$(CURDIR)/trainer-image $(VENV)/bin/lint-imports --no-cache

# Everything `make test` needs before pytest starts (.ci/run builds it while `make lint` runs).
test-deps: system-packages venv binaries objectstore tools images

test: test-deps
	$(VPY) -m pytest -p no:cacheprovider -ra

test-unit: venv
	$(VPY) -m pytest -p no:cacheprovider tests/unit

test-trainer: venv objectstore
	$(VPY) -m pytest -p no:cacheprovider tests/trainer

test-e2e: system-packages venv binaries objectstore tools images
	$(VPY) -m pytest -p no:cacheprovider tests/e2e

test-chart: system-packages venv binaries tools
	$(VPY) -m pytest -p no:cacheprovider tests/chart

demo: system-packages venv binaries tools images
	$(VPY) hack/demo.py

bench: system-packages venv binaries objectstore tools
	$(VPY) bench/control_plane.py
	$(VPY) bench/operator_scale.py
	$(VPY) bench/operator_chaos.py
	$(VPY) bench/trainer_throughput.py
	$(VPY) bench/objectstore_throughput.py
