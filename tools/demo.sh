#!/usr/bin/env bash
# `make demo`: the main job on the built-in sample, end to end, in .cache/demo.
#   1. build the sample clip (20 s: empty lobby, one person, a group of six, empty again)
#   2. make a device key, run the agent on the clip (10 s windows, k = 5, JSON-lines output)
#   3. verify every signed message and the audit log as a facility and an auditor would
#   4. write the auditor's HTML report
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
DEMO=.cache/demo
rm -rf "$DEMO"
mkdir -p "$DEMO"
$BIN/python tools/make_sample.py --out samples/lobby.mp4 >/dev/null
$BIN/emotion-agent keygen --out "$DEMO/keys" >/dev/null
# Relative paths in a config are read from the config file's folder ($DEMO), not from here.
cat >"$DEMO/agent.yaml" <<YAML
schema_version: 1
device_id: demo-lobby
site:
  jurisdiction: US
  context: retail
  purpose: analytics
camera: {source: "$PWD/samples/lobby.mp4", fps: 5, loop: false, realtime: false}
vision: {detector: full_range, accelerator: auto, threads: 1}
analytics: {window_seconds: 10, min_people: 5}
mqtt: {enabled: false}
outputs: {jsonl: messages.jsonl}
keys: {private_key: keys/device.key}
state_dir: state
YAML
echo "== emotion-agent run on samples/lobby.mp4 (10 s windows, k = 5)"
$BIN/emotion-agent --log-level WARNING run -c "$DEMO/agent.yaml"
echo "== published windows (signed; verify shows they are authentic)"
$BIN/python - "$DEMO/messages.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if not m["topic"].endswith("/stats"):
        continue
    b = m["payload"]["body"]
    if b["suppressed"]:
        print(f"window {b['window_start']}: suppressed ({b['suppressed']}): fewer than k={b['k']} people")
    else:
        shares = ", ".join(f"{k} {v / 10:.0f}%" for k, v in b["shares_pm"].items() if v)
        print(f"window {b['window_start']}: {b['people']} people; {shares}; "
              f"valence {b['valence_milli'] / 1000:+.2f}, arousal {b['arousal_milli'] / 1000:+.2f}")
PY
echo "== emotion-agent verify (signatures, sequence, topics)"
$BIN/emotion-agent verify --pubkey "$DEMO/keys/device.pub.jwk" --max-skew 100000000 "$DEMO/messages.jsonl" \
  && echo "all $(wc -l <"$DEMO/messages.jsonl") messages verified"
echo "== emotion-agent audit verify (Merkle tree, signed checkpoints, frames accounted, no image in state_dir)"
$BIN/emotion-agent audit verify "$DEMO/state/audit" --pubkey "$DEMO/keys/device.pub.jwk"
$BIN/emotion-agent audit report "$DEMO/state/audit" --pubkey "$DEMO/keys/device.pub.jwk" -o "$DEMO/report.html"
echo "== auditor's report: $DEMO/report.html"
