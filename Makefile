# Each target installs what it needs by itself, so it works on a fresh clone, also with
# a distribution's own "externally managed" python3: everything runs in a project
# virtual environment (.venv, ignored by git).
#
# PYTHON: the interpreter the venv is made from (Python 3.10+ with venv; on Debian and
# Ubuntu: apt install python3-venv). The venv sees that interpreter's packages
# (--system-site-packages), so a CUDA PyTorch you already have is kept:
#   make demo PYTHON=/path/to/python-with-cuda-torch
# Only where that interpreter has no torch is torch==2.13.0 installed into the venv (its
# CPU wheel lies on the build machines' disk; a bare "torch" would pull a multi-GB CUDA build).
PYTHON ?= python3
VENV ?= .venv
PY = $(VENV)/bin/python
PIP = $(PY) -m pip
TORCH_CPU = torch==2.13.0
# One thread for long training runs: two threads on a shared 2-core machine thrash.
TRAIN_THREADS ?= 1
TRAIN_STEPS ?= 100000

.PHONY: install demo test fuzz wheel frontier tabular default-model emoji-data bench bench-gpu quality readme-pictures clean

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
		{ echo "error: $(PYTHON) is older than 3.10; pass PYTHON=/path/to/python3.10+"; exit 1; }
	@$(PYTHON) -m venv --system-site-packages $(VENV) || \
		{ rm -rf $(VENV); echo "error: could not create $(VENV) with $(PYTHON); on Debian/Ubuntu: apt install python3-venv"; exit 1; }

# Reinstalled when pyproject.toml changes (the project itself is installed editable, with the
# optional diffusers and parquet extras so that their tests run too).
$(VENV)/.installed: $(PY) pyproject.toml
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q $(TORCH_CPU)
	@$(PIP) install -q -e ".[test,diffusers,parquet]"
	@touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/repaint inpaint examples/ --mask thick --out out/demo --concat --frames 16 --animate gif --overwrite
	$(VENV)/bin/repaint sheet out/demo
	@echo "results in out/demo/ (out/demo/sheet.png for all of them at a glance)"

test: install
	$(PY) -m pytest

# The property-based tests at length: generated tables and images for FUZZ_MINUTES in all (the suite runs
# them at 25 examples each); any failure is printed with its smallest example.
FUZZ_MINUTES ?= 10
fuzz: install
	HYPOTHESIS_PROFILE=fuzz FUZZ_MINUTES=$(FUZZ_MINUTES) $(PY) -m pytest -m fuzz -p no:cacheprovider -s

# A wheel (and an sdist) in dist/, carrying the embedded model, the cards and the mask presets.
wheel: install
	$(PY) -c "from setuptools import build_meta as b; print(b.build_sdist('dist')); print(b.build_wheel('dist'))"

emoji-data: install
	@fc-list 2>/dev/null | grep -q NotoColorEmoji || test -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf || \
		(apt-get update -q && apt-get install -y -q fonts-noto-color-emoji)
	@$(PY) -c "import fontTools" 2>/dev/null || $(PIP) install -q "fonttools>=4.40"
	$(PY) -m repaint_cli.training.emoji_data --out data/emoji32.npz --size 32

# Rebuilds the embedded model: resumes runs/emoji32, or the training state committed in
# weights/train-state/ (so training goes on across machines), or starts from scratch.
default-model: install emoji-data
	@if [ ! -f runs/emoji32/state.pt ] && [ -f weights/train-state/emoji32.pt ]; then \
		mkdir -p runs/emoji32 && cp weights/train-state/emoji32.pt runs/emoji32/state.pt; fi
	OMP_NUM_THREADS=$(TRAIN_THREADS) $(VENV)/bin/repaint train data/emoji32.npz --out runs/emoji32 --size 32 \
		--steps $(TRAIN_STEPS) --threads $(TRAIN_THREADS) --export weights/emoji32.safetensors

bench: install
	$(PY) benchmarks/speed.py --threads 2 --batch-sizes 1 4 8 --repeats 2 --unet-repeats 20 --cli 8

# Everything a lent GPU (15 minutes in all, start-up included) is for, in one script of under 8 minutes on one
# H100 (benchmarks/gpu_check.py): correctness first (graph vs eager, fp16 vs fp32 paired, fp32 without TF32, on
# the 256 px architecture with random non-zero weights), then the table at batch 1, 4 and 16 (the UNet alone
# graph-replayed as the bound, eager fp32, eager fp16, CUDA graphs fp16, the share outside the UNet, peak memory)
# and the levers: guided steps captured, auto batch sizing, --compile with capture. A section that would not
# finish within --budget-s is skipped with a note; the hard timeout is the backstop. Exit 1 if a check fails.
bench-gpu: install
	timeout 480 $(PY) benchmarks/gpu_check.py --budget-s 420 --guided --auto-batch --compile \
		--json-out benchmarks/gpu-check.json

quality: install emoji-data
	$(PY) benchmarks/quality.py --kinds thick thin genhalf --section quality-random
	$(PY) benchmarks/quality.py --kinds ex64 nn2 ev2li --section quality-extreme
	$(PY) benchmarks/quality.py --kinds thick --presets paper fast draft

# Tables: repaint impute against mean/mode, k-NN, MICE, MissForest and miceforest on scikit-learn's bundled
# datasets and two larger ones statsmodels ships, 5 mask seeds per setting (resumes a stopped run), then the
# cost table; scikit-learn, miceforest, lightgbm and statsmodels are the optional bench extra, never a run-time need.
tabular: install
	@$(PY) -c "import sklearn, miceforest, statsmodels" 2>/dev/null || $(PIP) install -q -e ".[bench]"
	OMP_NUM_THREADS=1 $(PY) benchmarks/tabular.py --threads 1
	$(PY) benchmarks/tabular.py --cost --threads 2

# Quality against UNet calls for every sampler candidate, paired with the paper's schedule image by image
# (resumes a stopped run, 16 images at a time; one core: about 70 minutes per 16 images).
frontier: install emoji-data
	OMP_NUM_THREADS=1 $(PY) benchmarks/frontier.py --n 96 --threads 1

# The pictures in the README, made by the embedded model.
readme-pictures: install
	$(VENV)/bin/repaint inpaint examples/ --mask thick --preset paper --out out/readme --overwrite --concat --frames 24 --animate gif
	$(PY) docs/make_pictures.py out/readme

clean:
	rm -rf out build dist *.egg-info .pytest_cache
