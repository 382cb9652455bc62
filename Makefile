# Two entry points for people: `make demo` and `make test`. Both set up everything they need.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Home Assistant's MQTT schemas judge the discovery messages (tests/transport/test_ha_schemas.py).
# Its own venv: HA pins many packages the agent must not inherit. 2024.3.3 is the newest
# Home Assistant that installs on Python 3.11 (2024.4 and later need 3.12+).
HA_VENV ?= .venv-ha
HA_VERSION := 2024.3.3
HA_STAMP := $(HA_VENV)/.installed-$(HA_VERSION)

.PHONY: setup system-deps media demo test lint typecheck bench clean arm64-smoke ha-venv

system-deps:
	@bash tools/system-deps.sh

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

setup: system-deps $(STAMP)

$(HA_STAMP):
	@test -x $(HA_VENV)/bin/python || python3 -m venv $(HA_VENV)
	$(HA_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(HA_VENV)/bin/python -m pip install --quiet 'homeassistant==$(HA_VERSION)'
	@touch $@

ha-venv: $(HA_STAMP)

media: setup
	$(PY) tools/fetch_media.py

demo: setup media
	bash tools/demo.sh

lint: setup
	$(VENV)/bin/ruff check agent tests tools
	$(VENV)/bin/mypy

test: setup media lint ha-venv
	$(VENV)/bin/pytest -q

# Issue 2's figures on the built-in clip, then float/int8 x ungated/gated on the demo clip.
bench: setup media
	$(VENV)/bin/emotion-agent --log-level WARNING bench
	@test -f samples/lobby.mp4 || $(PY) tools/make_sample.py --out samples/lobby.mp4
	$(VENV)/bin/emotion-agent bench --compare samples/lobby.mp4

# Not part of `make test`: needs root, debootstrap and qemu-user-static (docs/installing.md).
arm64-smoke: setup media
	bash tools/arm64-smoke

clean:
	rm -rf $(VENV) $(HA_VENV) .cache samples .pytest_cache .mypy_cache .ruff_cache
