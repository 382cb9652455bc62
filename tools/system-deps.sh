#!/usr/bin/env bash
# Debian packages the agent's tests and tools need. Installs only what is missing.
set -euo pipefail
need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
# python3-bottleneck: a Debian C extension built against Bookworm's numpy 1.x, for the numpy ABI tests.
# postgresql, nats-server, chromium: the fleet receiver's tests (docs/fleet.md).
# util-linux, iproute2: the stop test's private network namespace (unshare, ip; tests/test_sigterm.py).
for pkg in python3-venv mosquitto mosquitto-clients strace mtools dosfstools openssl systemd tzdata \
    python3-bottleneck postgresql nats-server chromium util-linux iproute2; do
  have "$pkg" || need+=("$pkg")
done
# pyenv or other non-Debian Pythons bring their own venv module; tools/install (and its test)
# also makes a venv with Debian's /usr/bin/python3, so that one must have it too.
if python3 -c 'import venv, ensurepip' 2>/dev/null \
   && /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null; then
  need=("${need[@]/python3-venv}")
fi
pkgs=()
for p in "${need[@]}"; do [ -n "$p" ] && pkgs+=("$p"); done
[ ${#pkgs[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${pkgs[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
