# helioforge: two entry points, each doing its own set-up on a fresh machine.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HELIOFORGE_DATA ?= $(abspath ../shared/data)
export HELIOFORGE_DATA

.PHONY: demo test install clean bench

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch==2.13.0 first: on these machines pip finds the local CPU wheel, so no dependency
	# can pull a newer torch with the CUDA packages.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/helioforge interrogate --profile cpu --workdir runs/demo --report runs/demo/report \
		--sharp-dir $(HELIOFORGE_DATA)/sharp --sharp-dir $(HELIOFORGE_DATA)/sharp_bad

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) benchmarks/bench_params.py
	$(PY) benchmarks/bench_generate.py
	$(PY) benchmarks/bench_search.py

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
