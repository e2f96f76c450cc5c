# kcb-harness: `make run` and `make test` work on a fresh Debian 12 machine (as root).
SHELL   := /bin/bash
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
BUILD   := $(abspath build)
OUT     ?= $(BUILD)/reports

.PHONY: all setup host venv build drivers wine-guest standin sign run test lint bench clean
all: build

setup: host venv

host:
	@scripts/setup-host.sh

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

build: drivers wine-guest

drivers: host
	$(MAKE) -s -C guest-drivers OUT=$(BUILD)/drivers

wine-guest: host
	$(MAKE) -s -C harness/guests/wine OUT=$(BUILD)/wine PYTHON=$(PYTHON)

# Test-signed copies of the drivers for a Windows VM (certificate in build/signing/).
sign: setup build
	rm -rf $(BUILD)/drivers-signed && cp -r $(BUILD)/drivers $(BUILD)/drivers-signed
	$(PY) -m harness sign $(BUILD)/drivers-signed/*.sys

# The Linux stand-in guest (Debian kernel + busybox initramfs) for the serial and VM tests.
standin: host
	standin-guest/build.sh $(BUILD)/standin

run: setup build
	$(PY) -m harness run --out $(OUT)

test: setup build standin
	$(PY) -m pytest

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

bench: setup build standin
	$(PY) benchmarks/run_all.py
	$(PY) benchmarks/kd_decoder.py
	$(PY) benchmarks/vm_revert.py

clean:
	rm -rf build
