# Two entry points for people: `make demo` and `make test`. Both set up everything they need.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Home Assistant's MQTT schemas judge the discovery messages (tests/transport/test_ha_schemas.py).
# Their own venvs: HA pins many packages the agent must not inherit. 2024.3.3 is the newest
# Home Assistant that installs on Python 3.11 (2024.4 and later need 3.12+); 2023.9.3 stands for
# the versions before device-based discovery and before `sn` in the device block (its loader
# needs numpy, which its package does not declare).
HA_VENV ?= .venv-ha
HA_VERSION := 2024.3.3
HA_STAMP := $(HA_VENV)/.installed-$(HA_VERSION)-run2
# What the MQTT integration and the frontend it needs import (Home Assistant would pip-install
# them at its first start; tests/transport/test_home_assistant.py runs it with --skip-pip).
HA_RUN_DEPS := 'paho-mqtt==1.6.1' 'janus==1.0.0' 'josepy==1.15.0' 'home-assistant-frontend==20240307.0' \
	'pillow==10.2.0' 'psutil-home-assistant==0.0.1' 'securetar==2024.2.1' 'numpy==1.26.0' \
	'SQLAlchemy==2.0.27' 'fnv-hash-fast==0.5.0' 'PyTurboJPEG==1.7.1' 'PyQRCode==1.2.1' 'pyotp==2.8.0'
HA_OLD_VENV ?= .venv-ha-2023
HA_OLD_VERSION := 2023.9.3
HA_OLD_STAMP := $(HA_OLD_VENV)/.installed-$(HA_OLD_VERSION)

.PHONY: setup system-deps media demo test lint typecheck bench fleet-bench clean arm64-smoke fuzz ha-venv

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
	$(HA_VENV)/bin/python -m pip install --quiet 'homeassistant==$(HA_VERSION)' $(HA_RUN_DEPS)
	@touch $@

$(HA_OLD_STAMP):
	@test -x $(HA_OLD_VENV)/bin/python || python3 -m venv $(HA_OLD_VENV)
	$(HA_OLD_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(HA_OLD_VENV)/bin/python -m pip install --quiet 'homeassistant==$(HA_OLD_VERSION)' numpy
	@touch $@

ha-venv: $(HA_STAMP) $(HA_OLD_STAMP)

media: setup
	$(PY) tools/fetch_media.py

demo: setup media
	bash tools/demo.sh

lint: setup
	$(VENV)/bin/ruff check agent tests tools
	$(VENV)/bin/mypy

test: setup media lint ha-venv
	$(VENV)/bin/pytest -q

# A few minutes of hypothesis fuzz of config text, MQTT commands and spooled rows (tests/test_fuzz_inputs.py);
# `make test` runs the same properties with 60 examples each.
fuzz: setup
	EMOTION_AGENT_FUZZ_EXAMPLES=20000 $(VENV)/bin/pytest -q -p no:cacheprovider tests/test_fuzz_inputs.py

# Issue 2's figures on the built-in clip, then float/int8 x ungated/gated on the demo clip, then
# how long counting people takes (docs/analytics.md).
bench: setup media
	$(VENV)/bin/emotion-agent --log-level WARNING bench
	@test -f samples/lobby.mp4 || $(PY) tools/make_sample.py --out samples/lobby.mp4
	$(VENV)/bin/emotion-agent bench --compare samples/lobby.mp4
	$(PY) tools/bench_people_count.py

# Issue 17's receiver figures: 3 replicas on PostgreSQL via mosquitto $$share and a 3-node NATS
# JetStream cluster, 1,000 and 10,000 simulated devices (not part of `make test`; a few minutes).
fleet-bench: setup
	$(PY) tools/fleet_bench.py --devices 1000 10000 --windows 2

# Not part of `make test`: needs root; installs debootstrap and qemu-user-static itself (docs/installing.md).
arm64-smoke: setup media
	bash tools/arm64-smoke

clean:
	rm -rf $(VENV) $(HA_VENV) $(HA_OLD_VENV) .cache samples .pytest_cache .mypy_cache .ruff_cache
