# Two commands do all set-up on a fresh machine with Python >= 3.10:
#   make demo   - the main job: pretrain on the built-in offline demo corpus
#   make test   - lint + the test suite (real data from ../shared/data or $NEUROFM_TEST_DATA)
PYTHON ?= python3
VENV ?= .venv
# Pins the CPU build of torch; set CONSTRAINTS= to let pip choose (e.g. CUDA builds on a GPU box).
CONSTRAINTS ?= .ci/constraints.txt
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint docs wheel clean peers

# PYTHONWARNINGS=ignore: setuptools' notices about editable installs are not the user's business
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "neurofm needs Python >= 3.10, found " + sys.version.split()[0]'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	PYTHONWARNINGS=ignore PIP_CONSTRAINT=$(if $(CONSTRAINTS),$(abspath $(CONSTRAINTS)),$(PIP_CONSTRAINT)) \
		$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/neurofm pretrain

# ruff, and the import floors of pyproject.toml's [tool.importlinter] (no circles, no layer
# importing one above it, no Hydra below the commands)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

# braindecode (for tests/test_braindecode.py and the peers' benchmarks) in .peers, beside the
# environment: braindecode needs torchaudio, which has no build for every torch
PEERS := .peers/.installed
$(PEERS): benchmarks/peers_env.sh $(STAMP)
	PYTHON=$(BIN)/python bash benchmarks/peers_env.sh .peers
	touch $(PEERS)

peers: $(PEERS)

test: lint $(PEERS)
	$(BIN)/python -m pytest -q

# the fast tier: no real data, no training subprocesses (about a minute on 2 cores)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# the documentation site (docs/ + mkdocs.yml) in site/; --strict: a broken link or reference fails
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# the sdist and wheel (dist/), checked by twine, installed into a fresh venv (build/wheel-venv)
# both ways: first the core install (no extras), which embeds real EEG and fMRI with the
# committed export and names the extra `neurofm pretrain` needs; then neurofm[train], which
# runs a 5-step pretraining on the demo corpus shipped inside
WHEEL_VENV := build/wheel-venv
DATA ?= $(abspath $(or $(NEUROFM_TEST_DATA),$(wildcard ../shared/data),shared/data))
wheel: $(STAMP)
	rm -rf dist $(WHEEL_VENV)
	$(BIN)/python -m build --quiet --outdir dist .
	$(BIN)/python -m twine check --strict dist/*
	$(PYTHON) -m venv $(WHEEL_VENV)
	PIP_CONSTRAINT=$(if $(CONSTRAINTS),$(abspath $(CONSTRAINTS)),$(PIP_CONSTRAINT)) \
		$(WHEEL_VENV)/bin/python -m pip install -q dist/*.whl
	cd $(WHEEL_VENV) && bin/neurofm --help > /dev/null
	cd $(WHEEL_VENV) && NEUROFM_PROGRESS=0 bin/python $(abspath .ci/core_install_check.py) \
		$(abspath tests/data/tiny-export-2026-12) $(DATA)
	PIP_CONSTRAINT=$(if $(CONSTRAINTS),$(abspath $(CONSTRAINTS)),$(PIP_CONSTRAINT)) \
		$(WHEEL_VENV)/bin/python -m pip install -q "$$(ls dist/*.whl)[train]"
	cd $(WHEEL_VENV) && NEUROFM_PROGRESS=0 bin/neurofm pretrain model=tiny trainer.max_steps=5 \
		data.root=demo run_dir=runs/wheel
	test -f $(WHEEL_VENV)/runs/wheel/checkpoints/last.ckpt

clean:
	rm -rf $(VENV) runs outputs .pytest_cache site dist build
