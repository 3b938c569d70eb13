# Two set-up commands for a fresh machine:
#   make demo   create or reuse a virtual environment, install, run the demo pipeline
#   make test   install dev dependencies, lint, run the test suite
# VENV may point outside the checkout (CI caches it there, keyed on the dependencies).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEPS_KEY := $(shell cat pyproject.toml requirements/lock.txt | sha256sum | cut -c1-16)
STAMP := $(VENV)/.alos2fm-deps-$(DEPS_KEY)
DEMO_DIR ?= demo

.PHONY: install test lint format demo bench clean

$(STAMP): pyproject.toml requirements/lock.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -r requirements/lock.txt
	rm -f $(VENV)/.alos2fm-deps-*
	touch $(STAMP)

# The package itself is always re-linked: a cached environment may have served another clone.
install: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .

lint: install
	$(BIN)/ruff check src tests benchmarks experiments scripts
	$(BIN)/ruff format --check src tests benchmarks experiments scripts

format: install
	$(BIN)/ruff check --fix src tests benchmarks experiments scripts
	$(BIN)/ruff format src tests benchmarks experiments scripts

# MERLIN's released weights (the optional extra alos2fm[merlin]) for the tests that load
# them; only its weight files are read, so not its dependencies (OpenCV among them).
test: lint
	$(BIN)/python -m pip install --quiet --no-deps deepdespeckling==0.8
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

# The install is timed too: its seconds are the first row of the demo's timing table.
demo:
	@t0=$$(date +%s.%N); $(MAKE) --no-print-directory install && \
	DEMO_INSTALL_SECONDS=$$(awk -v a=$$t0 -v b=$$(date +%s.%N) 'BEGIN { printf "%.1f", b - a }') \
	bash scripts/demo.sh $(DEMO_DIR) $(BIN)

bench: install
	$(BIN)/python benchmarks/prepare_throughput.py
	$(BIN)/python benchmarks/pretrain_throughput.py
	$(BIN)/python benchmarks/predict_throughput.py
	$(BIN)/python benchmarks/map_throughput.py
	$(BIN)/python benchmarks/finetune_throughput.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .ruff_cache build src/*.egg-info
