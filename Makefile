# `make test` builds .venv (torch/torchvision from the machine's pip, capped at 2.14.1/0.29.1),
# installs the package with its dev extras and runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?= -m "not slow and not gpu"

.PHONY: venv test test-all test-distributed lint bench bench-gpu demo help-specs clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

venv: $(BIN)/activate
	$(BIN)/pip install --quiet "torch<=2.14.1" "torchvision<=0.29.1"
	$(BIN)/pip install --quiet -e ".[dev]"

test: venv
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)

# FSDP2, DeepSpeed ZeRO-2/3, two machines on loopback and DDP resumes, each under `accelerate launch` on 2 CPU
# processes (~15 min; the first DeepSpeed run also compiles DeepSpeed's CPU communication op once).
test-distributed: venv
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m distributed tests/test_distributed.py tests/test_resume.py

test-all: venv
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not gpu"

lint: venv
	$(BIN)/ruff check src tests benchmarks dataset_scripts

demo: venv
	HF_HUB_OFFLINE=1 $(BIN)/videorft demo --output_dir outputs/demo

# `videorft <command> --help` prints these without importing torch; regenerate them after changing an option.
help-specs: venv
	HF_HUB_OFFLINE=1 $(BIN)/python -m videorft_hf.scripts.help_cache

bench: venv
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache

# GPU only (467 s on one H200, 2026-11-29); `make bench-gpu ARGS=--tiny` runs the same pipeline on CPU at tiny sizes.
bench-gpu: venv
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_gpu.py $(ARGS)
