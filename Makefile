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

# Flare-class-conditioned diffusion (cpu profile) on the sample's calibrated DN/s AIA 131 Å files
# (aia/sdoml_binned): the paper's event rule (SWPC list, image ≤ 7 min after the peak, continuous
# label = peak flux) where it links, else the GOES flux at the image time. The embedded sample holds
# only 2 of those files: there the demo falls back to its 71 browse JPEGs (193 Å, display-scaled,
# flux labels) and says so. DIFF_LABEL_ARGS overrides the choice (e.g. --images DATA/aia/browse).
DIFF_WORK ?= runs/diffusion
DIFF_LABEL_ARGS ?=
demo-diffusion: $(STAMP)
	data=$(DATA) && args="$(DIFF_LABEL_ARGS)" && cls=M && \
	if [ -z "$$args" ] && [ $$(ls $$data/aia/sdoml_binned 2>/dev/null | grep -c 0131A) -lt 60 ]; then \
		echo "demo-diffusion: $$data has fewer than 60 AIA 131 Å DN/s files; using its browse JPEGs (193 Å, flux labels)." \
		     "The full demo needs the full sample (../shared/data or HELIOFORGE_DATA)."; \
		args="--images $$data/aia/browse --wavelength 193 --source flux"; cls=B; fi && \
	$(VENV)/bin/helioforge diffusion label -w $(DIFF_WORK) -p cpu $$args && \
	$(VENV)/bin/helioforge diffusion train -w $(DIFF_WORK) --condition class && \
	$(VENV)/bin/helioforge diffusion sample -w $(DIFF_WORK) --flare-class $$cls -n 16 && \
	$(VENV)/bin/helioforge diffusion evaluate -w $(DIFF_WORK) --condition class

# Paper §8.1 on the same work folder (after demo-diffusion).
demo-augment: $(STAMP)
	$(VENV)/bin/helioforge diffusion augment-experiment -w $(DIFF_WORK) --condition class

# SICON (paper 003): CPU-scale training set → train both networks → invert the real SP patch → report.
# Held-out set: 6 maps of 64×64 pixels (plage or a spot, each with quiet Sun around), inverted whole,
# normalised with the training set's quiet-Sun reference.
INV_WORK ?= runs/inversion
demo-inversion: $(STAMP)
	$(VENV)/bin/helioforge inversion make-trainset -o $(INV_WORK)/trainset -p cpu
	$(VENV)/bin/helioforge inversion make-trainset -o $(INV_WORK)/valset -p cpu --patches 6 --size 64 --kinds plage,spot \
		--seed 1 --reference-from $(INV_WORK)/trainset
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
	$(PY) benchmarks/bench_studio.py -w runs/demo
	$(PY) benchmarks/bench_samplers.py
	$(PY) benchmarks/validate_lightweaver.py
	$(PY) benchmarks/bench_trainset.py
	$(PY) benchmarks/bench_lte_kernel.py
	OMP_NUM_THREADS=1 $(PY) benchmarks/bench_trainset_dask.py --kernel fused --workers 1,2 --patches 10 --geometry paper
	$(PY) benchmarks/bench_sdoml_stream.py
	$(PY) benchmarks/bench_inversion.py
	$(PY) benchmarks/bench_shared_cpu.py

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
