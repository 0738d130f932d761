# Each target installs what it needs by itself, so it works on a fresh clone.
PYTHON ?= python3
PIP = $(PYTHON) -m pip
# The CPU wheel of this version lies on the build machines' disk; a bare "torch"
# would pull a multi-GB CUDA build. A torch already present (e.g. CUDA) is kept.
TORCH_CPU = torch==2.13.0
# One thread for long training runs: two threads on a shared 2-core machine thrash.
TRAIN_THREADS ?= 1
TRAIN_STEPS ?= 100000

.PHONY: install demo test default-model emoji-data bench quality readme-pictures clean

install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q $(TORCH_CPU)
	@$(PIP) install -q -e ".[test]"

demo: install
	repaint inpaint examples/ --mask thick --out out/demo --concat --frames 16 --animate gif --overwrite
	repaint sheet out/demo
	@echo "results in out/demo/ (out/demo/sheet.png for all of them at a glance)"

test: install
	$(PYTHON) -m pytest

emoji-data:
	@fc-list 2>/dev/null | grep -q NotoColorEmoji || test -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf || \
		(apt-get update -q && apt-get install -y -q fonts-noto-color-emoji)
	@$(PYTHON) -c "import fontTools" 2>/dev/null || $(PIP) install -q "fonttools>=4.40"
	$(PYTHON) -m repaint_cli.emoji --out data/emoji32.npz --size 32

# Rebuilds the embedded model: resumes runs/emoji32, or the training state committed in
# weights/train-state/ (so training goes on across machines), or starts from scratch.
default-model: install emoji-data
	@if [ ! -f runs/emoji32/state.pt ] && [ -f weights/train-state/emoji32.pt ]; then \
		mkdir -p runs/emoji32 && cp weights/train-state/emoji32.pt runs/emoji32/state.pt; fi
	OMP_NUM_THREADS=$(TRAIN_THREADS) repaint train data/emoji32.npz --out runs/emoji32 --size 32 \
		--steps $(TRAIN_STEPS) --threads $(TRAIN_THREADS) --export weights/emoji32.safetensors

bench: install
	$(PYTHON) benchmarks/speed.py --threads 2 --batch-sizes 1 4 8 --repeats 2 --unet-repeats 20 --cli 8

quality: install emoji-data
	$(PYTHON) benchmarks/quality.py --kinds thick thin genhalf --section quality-random
	$(PYTHON) benchmarks/quality.py --kinds ex64 nn2 ev2li --section quality-extreme
	$(PYTHON) benchmarks/quality.py --kinds thick --presets paper fast draft

# The pictures in the README, made by the embedded model.
readme-pictures: install
	repaint inpaint examples/ --mask thick --preset paper --out out/readme --overwrite --concat --frames 24 --animate gif
	$(PYTHON) docs/make_pictures.py out/readme

clean:
	rm -rf out build *.egg-info .pytest_cache
