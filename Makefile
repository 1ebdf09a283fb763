# Set-up and everyday tasks. `make quickstart` and `make test` are the README's two commands.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
EPISODES ?= 60

LOCK   := requirements/lock.txt
EXTRAS ?= dev,tflite,ray
STAMP  := $(VENV)/.amc-installed
# Extra pip arguments for torch alone, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
# on a machine without the local CPU wheel (PyPI's default Linux build of torch is the CUDA one).
TORCH_PIP_ARGS ?=

.PHONY: install data quickstart test test-all lint typecheck smoke lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Installs the versions CI tests, from the lock. torch is installed first and on its own, pinned to
# 2.13.0, so pip takes the local CPU wheel (never a multi-GB CUDA build); the lock leaves torch out
# (requirements/README.md says why). Re-runs are a no-op until the metadata or the lock change.
install: $(STAMP)

$(STAMP): $(BIN)/python setup.cfg $(wildcard setup.py) pyproject.toml $(LOCK)
	$(BIN)/pip install -q $(TORCH_PIP_ARGS) torch==2.13.0
	$(BIN)/pip install -q -c $(LOCK) -e '.[$(EXTRAS)]'
	@touch $@

# Refresh the lock after changing dependencies in setup.cfg (keeps current pins where they still fit;
# `make lock UPGRADE=1` moves everything to the newest allowed versions). See requirements/README.md.
lock: $(BIN)/python
	$(BIN)/pip install -q $(TORCH_PIP_ARGS) torch==2.13.0
	$(BIN)/pip install -q pip-tools==7.6.2
	$(BIN)/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links \
		--unsafe-package torch --extra dev --extra tflite --extra ray $(if $(UPGRADE),--upgrade) \
		-o $(LOCK) setup.cfg

# Fashion-MNIST comes from Debian's dataset-fashion-mnist (IDX files in /usr/share/datasets).
data:
	@if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then \
		echo "Fashion-MNIST: found in /usr/share/datasets/fashion-mnist"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "Fashion-MNIST not installed: install Debian's dataset-fashion-mnist or pass --data-dir to the commands"; \
	fi

# The main job on the built-in default: latency table for the shipped teacher on this CPU,
# a latency-aware AMC search to 50% of its measured latency, then a short KD fine-tune.
# Results go to the per-user data dir (not the checkout): QS_OUT=DIR to choose another place.
quickstart: install data
	@out="$${QS_OUT:-$$($(BIN)/python -c 'from amc_mobile.storage import user_data_dir; print(user_data_dir() / "runs" / "quickstart")')}"; \
	set -e; echo "quickstart results: $$out"; \
	$(BIN)/amc-bench profile --device host-cpu --checkpoint zoo:mobilenet_v1-fmnist; \
	$(BIN)/amc-mobile search --checkpoint zoo:mobilenet_v1-fmnist --device host-cpu \
		--latency-budget 50% --episodes $(EPISODES) --out "$$out"; \
	$(BIN)/amc-mobile finetune --checkpoint "$$out/pruned.pt" \
		--teacher zoo:mobilenet_v1-fmnist --epochs 1 --max-train-images 10000 --test \
		--out "$$out/finetuned" --resume

test: install data
	$(BIN)/python -m pytest -m "not slow" -q

test-all: install data
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check amc_mobile android_harness bench tests

# mypy over the configured set (setup.cfg [mypy] files = amc_mobile, android_harness)
typecheck: install
	$(BIN)/mypy

smoke: install
	$(BIN)/python -m android_harness.loopback.smoke

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache
