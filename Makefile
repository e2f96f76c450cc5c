# kcb-harness: `make run` and `make test` work on a fresh Debian 12 machine (as root), even a minimal one:
# every target installs what it needs first (scripts/setup-host.sh), nothing has to be installed by hand.
SHELL   := /bin/bash
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
BUILD   := $(abspath build)
OUT     ?= $(BUILD)/reports

.PHONY: all setup host host-run venv venv-run build drivers refused-drivers wine-guest standin sign run test lint bench soak fresh-machine-check clean
all: build

setup: host venv

# Host packages: `run` needs only the embedded guest's (Python, mingw-w64, Wine); the rest needs everything.
host-run:
	@scripts/setup-host.sh run
host:
	@scripts/setup-host.sh all

# The virtual environment: the harness alone for `make run`; with the VM guest's libraries and the dev tools for the rest.
venv-run: $(VENV)/.installed-run
$(VENV)/.installed-run: pyproject.toml | host-run
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e .
	touch $@

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml | host
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@ $(VENV)/.installed-run

build: drivers wine-guest

drivers: host-run
	$(MAKE) -s -C guest-drivers OUT=$(BUILD)/drivers

# Images the embedded guest must refuse (the tests of its import check); the x86 one needs `make host`.
refused-drivers: host
	$(MAKE) -s -C guest-drivers refused OUT=$(BUILD)/drivers

wine-guest: host-run
	$(MAKE) -s -C harness/guests/wine OUT=$(BUILD)/wine PYTHON=$(PYTHON)

# Test-signed copies of the drivers for a Windows VM (certificate in build/signing/).
sign: setup build
	rm -rf $(BUILD)/drivers-signed && cp -r $(BUILD)/drivers $(BUILD)/drivers-signed
	$(PY) -m harness sign $(BUILD)/drivers-signed/*.sys

# The Linux stand-in guest (Debian kernel + busybox initramfs) for the serial and VM tests.
standin: host venv drivers
	standin-guest/build.sh $(BUILD)/standin $(BUILD)/drivers-null-deref $(abspath $(PY))

run: host-run venv-run build
	$(PY) -m harness run --out $(OUT)

test: setup build refused-drivers standin
	$(PY) -m pytest

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

bench: setup build standin
	$(PY) benchmarks/run_all.py
	$(PY) benchmarks/kd_decoder.py
	$(PY) benchmarks/vm_revert.py
	$(PY) benchmarks/suite.py
	$(PY) benchmarks/winrm_upload.py
	$(PY) benchmarks/triage.py
	$(PY) benchmarks/run_step.py
	$(PY) benchmarks/kd_triage.py

# False failures per 1,000 scenario runs, idle and with both cores busy (long: see benchmarks/soak.py --help).
soak: setup build standin
	$(PY) benchmarks/soak.py

# The README's two commands on a minimal Debian 12 root with the clone in /root (needs debootstrap; ~20 min).
fresh-machine-check:
	scripts/fresh-machine-check.sh

clean:
	rm -rf build
