# Everything from a bare machine: `make demo` runs the demo, `make test` the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MEDFLOW := $(VENV)/bin/medflow
DEMO := demo
STAMP := $(VENV)/.medflow-installed

.PHONY: install test demo bench clean

install: $(STAMP)

# torch is installed first and pinned, so nothing can pull a multi-GB CUDA build.
$(STAMP): python/pyproject.toml python/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c python/constraints.txt torch
	$(PY) -m pip install -q -c python/constraints.txt -e 'python[test,bench]'
	touch $@

test: $(STAMP)
	$(PY) -m pytest -n 2 -q tests

demo: $(STAMP)
	$(MEDFLOW) demo-cohort --kind cardiac --subjects 8 --seed 0 --out $(DEMO)/cohort
	$(MEDFLOW) preprocess --samplesheet $(DEMO)/cohort/samplesheet.csv \
	    --outdir $(DEMO)/results/preprocess --spacing 1.25,1.25,keep --normalise zscore --jobs 2
	@echo "demo cohort:   $(DEMO)/cohort (samplesheet.csv, truth.json per subject)"
	@echo "preprocessed:  $(DEMO)/results/preprocess (table: preprocess.parquet)"

bench: $(STAMP)
	$(PY) benchmarks/preprocess/bench_preprocess.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
