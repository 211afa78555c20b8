# Set-up and everyday commands. `make demo` and `make test` each set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export NO_ALBUMENTATIONS_UPDATE := 1
export HF_HUB_OFFLINE := 1

.PHONY: setup demo test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[train,dev]'
	touch $@

# The main job: the bundled default model on the bundled sample clip.
demo: setup
	$(VENV)/bin/streamseg run samples/demo.mp4 --output out/demo_annotated.mp4 \
		--events out/demo_events.jsonl --view none

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check streamseg training tests

clean:
	rm -rf $(VENV) out .pytest_cache
