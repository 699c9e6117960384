# helioforge: two entry points, each doing its own set-up on a fresh machine.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The data folder: `helioforge data path` applies the one rule (--data → $HELIOFORGE_DATA →
# ../shared/data beside the checkout → fetched full sample → embedded sample).
DATA = $$($(VENV)/bin/helioforge data path)

.PHONY: demo demo-diffusion demo-augment demo-inversion test install clean bench

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
	data=$(DATA) && $(VENV)/bin/helioforge interrogate --profile cpu --workdir runs/demo --report runs/demo/report \
		--sharp-dir $$data/sharp --sharp-dir $$data/sharp_bad

# Flare-class-conditioned diffusion on the real AIA 193 Å browse sample + GOES labels (CPU profile).
DIFF_WORK ?= runs/diffusion
demo-diffusion: $(STAMP)
	$(VENV)/bin/helioforge diffusion label -w $(DIFF_WORK) -p cpu
	$(VENV)/bin/helioforge diffusion train -w $(DIFF_WORK) --condition class
	$(VENV)/bin/helioforge diffusion sample -w $(DIFF_WORK) --flare-class C -n 16 --sampler dpm --steps 20 --cfg-scale 1
	$(VENV)/bin/helioforge diffusion evaluate -w $(DIFF_WORK) --condition class

# Paper §8.1 on the same work folder (after demo-diffusion).
demo-augment: $(STAMP)
	$(VENV)/bin/helioforge diffusion augment-experiment -w $(DIFF_WORK) --condition class

# SICON (paper 003): CPU-scale training set → train both networks → invert the real SP patch → report.
INV_WORK ?= runs/inversion
demo-inversion: $(STAMP)
	$(VENV)/bin/helioforge inversion make-trainset -o $(INV_WORK)/trainset -p cpu
	$(VENV)/bin/helioforge inversion make-trainset -o $(INV_WORK)/valset -p cpu --patches 24 --seed 1
	$(VENV)/bin/helioforge inversion train -t $(INV_WORK)/trainset -w $(INV_WORK) -n encdec -p cpu
	$(VENV)/bin/helioforge inversion train -t $(INV_WORK)/trainset -w $(INV_WORK) -n concat -p cpu
	data=$(DATA) && $(VENV)/bin/helioforge invert $$data/stokes/hinode_sp_sample/hinode4d.20130912.sample.fits \
		-w $(INV_WORK) -n encdec -o $(INV_WORK)/sample_atmos_encdec.fits
	$(VENV)/bin/helioforge inversion validate --valset $(INV_WORK)/valset -w $(INV_WORK)

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) benchmarks/bench_params.py
	$(PY) benchmarks/bench_generate.py
	$(PY) benchmarks/bench_search.py
	$(PY) benchmarks/bench_samplers.py
	$(PY) benchmarks/validate_lightweaver.py
	$(PY) benchmarks/bench_trainset.py
	$(PY) benchmarks/bench_inversion.py
	$(PY) benchmarks/bench_shared_cpu.py

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
