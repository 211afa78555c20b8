# Set-up and everyday commands. `make demo` and `make test` each set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# pip prints errors only; each step prints one line instead. `make setup PIP_QUIET=`
# shows pip's full output.
PIP_QUIET ?= -qq
export NO_ALBUMENTATIONS_UPDATE := 1
export HF_HUB_OFFLINE := 1

.PHONY: setup demo test browser lint clean bundled-model

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@echo "setup: creating $(VENV) with $$($(PYTHON) --version 2>&1)"
	@$(PYTHON) -m venv $(VENV)
	@echo "setup: updating pip"
	@$(PY) -m pip install $(PIP_QUIET) --upgrade pip
	@echo "setup: installing streamseg with its training and test extras (first time: about 5.5 GB, a few minutes)"
	@$(PY) -m pip install $(PIP_QUIET) -e '.[train,dev]'
	@touch $@
	@echo "setup: done; $(VENV)/bin/streamseg --help lists the commands"

# The main job: the bundled default model on the bundled sample clip.
demo: setup
	@echo "demo: the bundled default model on samples/demo.mp4 (300 frames)"
	@$(VENV)/bin/streamseg run samples/demo.mp4 --output out/demo_annotated.mp4 \
		--events out/demo_events.jsonl --view none
	@echo "demo: annotated video out/demo_annotated.mp4, per-frame findings out/demo_events.jsonl"

test: setup browser
	$(PY) -m pytest -q

# tests/test_browser.py drives Debian's headless Chromium through chromedriver.
# Install both when missing, where we can (root with apt-get); elsewhere, or
# if the install fails, that test is skipped and says why.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium and chromium-driver for the browser test"; \
		{ timeout 600 apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			timeout 900 apt-get install -y -qq chromium chromium-driver >/dev/null; } \
		|| echo "could not install chromium; the browser test will be skipped"; \
	else \
		echo "chromium/chromedriver missing (installing needs root and apt-get); the browser test will be skipped"; \
	fi

# The bundled models' whole recipe, each training resumable (run it again after a stop).
# The default model: one run of configs/kvasir_fpn_lite2_v2.yaml (FPN from ImageNet, 50
# epochs; the shipped file is its seed 1). The fast model, from the previous default's
# lineage: stage 1 (UNet++, 50 epochs from ImageNet), stage 2 (FPN with stage 1's
# encoder, 16 epochs), stage 3 (stage 2 fine-tuned 8 epochs: the previous default), stage
# 4 (a slimmer FPN decoder under stage 3's encoder, 16 epochs: the fast model). Then their
# INT8 artefacts. TRAIN_ARGS: extra options for every training, e.g.
# TRAIN_ARGS="--set data.num_workers=6" (or "--set optimization.precision=bf16" on a CPU
# where bf16 trains faster: docs/results.md).
DATA ?= ../shared/data/kvasir-seg
TRAIN_ARGS ?=
bundled-model: setup
	$(PY) -m training train --config configs/kvasir_fpn_lite2_v2.yaml --data $(DATA) --resume --set optimization.seed=1 $(TRAIN_ARGS)
	$(PY) -m training train --config configs/kvasir_unetpp_lite2.yaml --data $(DATA) --resume $(TRAIN_ARGS)
	$(PY) -m training train --config configs/kvasir_fpn_lite2_from_bundled.yaml --data $(DATA) --resume $(TRAIN_ARGS)
	$(PY) -m training train --config configs/kvasir_fpn_lite2_finetune.yaml --data $(DATA) --resume $(TRAIN_ARGS)
	$(PY) -m training train --config configs/kvasir_fpn_lite2_slim.yaml --data $(DATA) --resume $(TRAIN_ARGS)
	mkdir -p runs/bundled
	cp runs/kvasir_fpn_lite2_v2/model.safetensors runs/bundled/default.safetensors
	cp runs/kvasir_fpn_lite2_slim/model.safetensors runs/bundled/fast.safetensors
	$(PY) -m training quantize --model runs/bundled/default.safetensors --data $(DATA)
	$(PY) -m training quantize --model runs/bundled/fast.safetensors --data $(DATA)
	@echo "bundled-model: runs/bundled/default.safetensors, fast.safetensors and their INT8 artefacts"

lint: setup
	$(VENV)/bin/ruff check streamseg training tests

clean:
	rm -rf $(VENV) out .pytest_cache
