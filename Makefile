# Two commands do all the set-up on a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch and torchvision are pinned to the builds this machine's pip serves from disk (see README).
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: venv test demo bench lint format clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	bash scripts/ensure_postgres.sh
	$(BIN)/ruff check mgm_studies tests benchmarks scripts
	$(BIN)/ruff format --check mgm_studies tests benchmarks scripts
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	bash scripts/demo.sh

bench: $(STAMP)
	$(BIN)/python benchmarks/trainer_overhead.py
	$(BIN)/python benchmarks/objective_cost.py
	$(BIN)/python benchmarks/sweep_overhead.py
	$(BIN)/python benchmarks/image_throughput.py
	$(BIN)/python benchmarks/eval_memory.py
	$(BIN)/python benchmarks/gpu_sweep.py --mode cpu

lint: $(STAMP)
	$(BIN)/ruff check mgm_studies tests benchmarks scripts
	$(BIN)/ruff format --check mgm_studies tests benchmarks scripts

format: $(STAMP)
	$(BIN)/ruff format mgm_studies tests benchmarks scripts
	$(BIN)/ruff check --fix mgm_studies tests benchmarks scripts

clean:
	rm -rf out checkpoints mlartifacts mlflow.db .pytest_cache
