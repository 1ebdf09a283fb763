# Set-up and everyday tasks. `make quickstart` and `make test` are the README's two commands.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
EPISODES ?= 60

.PHONY: install data quickstart test test-all lint smoke clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is pinned to 2.13.0 first so pip takes the local CPU wheel, never a CUDA build.
install: $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,tflite]'

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
quickstart: install data
	$(BIN)/amc-bench profile --device host-cpu --checkpoint zoo:mobilenet_v1-fmnist
	$(BIN)/amc-mobile search --checkpoint zoo:mobilenet_v1-fmnist --device host-cpu \
		--latency-budget 50% --episodes $(EPISODES) --out runs/quickstart
	$(BIN)/amc-mobile finetune --checkpoint runs/quickstart/pruned.pt \
		--teacher zoo:mobilenet_v1-fmnist --epochs 1 --max-train-images 10000 --test \
		--out runs/quickstart/finetuned

test: install data
	$(BIN)/python -m pytest -m "not slow" -q

test-all: install data
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check amc_mobile android_harness bench tests

smoke: install
	$(BIN)/python -m android_harness.loopback.smoke

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
