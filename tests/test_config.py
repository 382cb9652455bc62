"""Config loading: valid files load, every error names its key, line, value and the rule."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent.config import RESERVED_DEVICE_IDS, json_schema, load_config, parse_config
from agent.crypto import generate_keypair
from agent.errors import ConfigError
from agent.fleet.settings import MqttSourceSettings
from agent.vision.manifest import default_models_dir

MINIMAL = "schema_version: 1\ndevice_id: lobby-1\n"


def test_minimal_config_gets_defaults() -> None:
    cfg = parse_config(MINIMAL)
    assert cfg.device_id == "lobby-1"
    assert cfg.analytics.min_people == 5
    assert cfg.analytics.window_seconds == 60


def test_unknown_key_is_named_with_its_line() -> None:
    text = MINIMAL + "camera:\n  source: /dev/video0\n  fsp: 5\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "site.yaml")
    assert info.value.problems == [
        "camera.fsp (site.yaml:5): unknown key (found 5); did you mean fps? (else remove it)"
    ]


def test_a_misspelt_secret_key_keeps_its_value_out_of_the_error() -> None:
    """`pasword` is not named like a secret, but the key it is a misspelling of is."""
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + "mqtt:\n  pasword: hunter2\n", "c.yaml")
    (problem,) = info.value.problems
    assert "hunter2" not in problem
    assert "did you mean password_file?" in problem


def test_an_unknown_key_with_no_close_match_lists_its_sections_keys() -> None:
    """The error named the wrong key but not the keys the section has (found by a new-user trial)."""
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + "analytics:\n  length: 60\n", "c.yaml")
    (problem,) = info.value.problems
    assert problem.startswith(
        "analytics.length (c.yaml:4): unknown key (found 60); remove it or check its spelling; "
        "the keys here are "
    )
    assert "window_seconds" in problem
    assert "min_people" in problem


def test_wrong_type_says_what_was_found() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + "analytics:\n  min_people: many\n", "c.yaml")
    (problem,) = info.value.problems
    assert problem.startswith("analytics.min_people (c.yaml:4): ")
    assert "'many'" in problem


def test_every_problem_is_reported_at_once() -> None:
    text = "device_id: Lobby 1\ncamera: {fps: 0}\nvision: {detector: far}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yaml")
    paths = sorted(p.split(" ")[0] for p in info.value.problems)
    assert paths == ["camera.fps", "device_id", "vision.detector"]
    detector = next(p for p in info.value.problems if p.startswith("vision.detector"))
    assert "'short_range' or 'full_range'" in detector


@pytest.mark.parametrize("name", ["homeassistant", "emotion-agent-fleet", "site"])
def test_a_device_id_the_broker_acl_gives_other_rights_is_refused_with_the_reason(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"device_id: {name}\n", "c.yaml")
    (problem,) = info.value.problems
    why = RESERVED_DEVICE_IDS[name]
    assert problem.startswith(f"device_id (c.yaml:1): device_id {name!r} is reserved: {why}"), problem


def test_cross_field_rule_explains_the_fix() -> None:
    text = MINIMAL + "vision:\n  quality: {min_brightness: 200, max_brightness: 100}\n"
    with pytest.raises(ConfigError, match=r"min_brightness \(200.0\) must be below"):
        parse_config(text)


def test_unsupported_schema_version() -> None:
    with pytest.raises(ConfigError, match="schema_version 7 is not supported"):
        parse_config("schema_version: 7\ndevice_id: a\n")


def test_yaml_syntax_error_has_a_line() -> None:
    with pytest.raises(ConfigError, match=r"c.yaml:3: not valid YAML: mapping values"):
        parse_config("device_id: a\ncamera:\n  source: a: b\n", "c.yaml")


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("/nonexistent/agent.yaml")


def test_example_configs_are_valid() -> None:
    examples = sorted((Path(__file__).parent.parent / "firmware_config").glob("*.yaml"))
    assert examples, "firmware_config/ has no example configs"
    for path in examples:
        if path.name.startswith("mosquitto"):
            continue
        load_config(path)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, check=False
    )


FIX = "YAML text holds no control characters but tabs and line breaks: delete it"
NUL, CONTROL = "a NUL byte (U+0000)", "a control character"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (MINIMAL + "mqtt:\n  host: hunter\x002\n", f":4: not valid YAML: {NUL} at column 15; "),
        (MINIMAL + "mqtt: {host: b}\x07\n", f":3: not valid YAML: {CONTROL} (U+0007) at column 16; "),
        ("\x1b" + MINIMAL, f":1: not valid YAML: {CONTROL} (U+001B) at column 1; "),
        # after two-byte characters: libyaml counts its "position" in bytes, not characters
        (MINIMAL + "site: {notes: \"éé\x00\"}\n", f":3: not valid YAML: {NUL} at column 18; "),
        (MINIMAL.replace("\n", "\r\n") + "x: a\x00\r\n", f":3: not valid YAML: {NUL} at column 5; "),
    ],
    ids=["NUL", "BEL", "ESC first", "after non-ASCII", "CRLF lines"],
)
def test_a_control_character_in_the_file_is_located_by_line_and_column(
    tmp_path: Path, text: str, said: str
) -> None:
    """The error said "position 52" (characters or, through libyaml, bytes from the file's start),
    where every other YAML error says its line."""
    path = tmp_path / "agent.yaml"
    path.write_bytes(text.encode("utf-8"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}{said}{FIX}"), message
    assert "position" not in message
    assert "hunter" not in message  # the file's text is not shown


def test_check_config_locates_a_nul_byte_by_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_bytes((MINIMAL + "mqtt:\n  host: hunter\x002\n").encode())
    proc = run_cli("check-config", "-c", str(path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr == (
        f"emotion-agent: error: {path}:4: not valid YAML: a NUL byte (U+0000) at column 15; {FIX} "
        "(an editor that shows invisible characters finds it)\n"
    )


def test_check_config_exits_2_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL + "mqtt:\n  port: 70000\n")
    proc = run_cli("check-config", "-c", str(bad))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"mqtt.port ({bad}:4)" in proc.stderr
    assert "less than or equal to 65535" in proc.stderr


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "keys")
    good = tmp_path / "good.yaml"
    good.write_text(
        MINIMAL + "site: {jurisdiction: US, context: retail, purpose: analytics}\n"
        f"keys: {{private_key: {tmp_path / 'keys' / 'device.key'}}}\nstate_dir: {tmp_path / 'state'}\n"
    )
    proc = run_cli("check-config", "-c", str(good))
    assert proc.returncode == 0, proc.stderr
    assert "valid" in proc.stdout


def test_check_config_refuses_a_signage_date_after_today(tmp_path: Path) -> None:
    """`run` refuses it (policy.md: the date must not be in the future); check-config said
    `[ok] ... signage confirmed on` that date (found by a new-user trial)."""
    import datetime as dt  # noqa: PLC0415

    later = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=2)
    future = tmp_path / "shop.yaml"
    future.write_text(
        MINIMAL + "site: {jurisdiction: DE, context: retail, purpose: analytics, consent: signage,\n"
        f"  signage: {{confirmed: {later.isoformat()}, notice_url: 'https://shop.example/privacy', "
        "controller: Shop GmbH}}\n"
    )
    proc = run_cli("check-config", "-c", str(future))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"site.signage.confirmed is {later.isoformat()}, after today" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_config_applies_the_site_policy(tmp_path: Path) -> None:
    refused = tmp_path / "school.yaml"
    refused.write_text(MINIMAL + "site: {jurisdiction: FR, context: education, purpose: analytics}\n")
    proc = run_cli("check-config", "-c", str(refused))
    assert proc.returncode == 2
    assert "Art. 5(1)(f)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_config_schema_is_json_schema() -> None:
    proc = run_cli("config-schema")
    assert proc.returncode == 0
    schema = json.loads(proc.stdout)
    assert schema["properties"]["device_id"]["pattern"]
    assert schema["additionalProperties"] is False


def schema_fields_without_description() -> list[str]:
    schema = json_schema()
    models = {"AgentConfig": schema, **schema.get("$defs", {})}
    return sorted(
        f"{name}.{key}"
        for name, model in models.items()
        for key, prop in model.get("properties", {}).items()
        if not prop.get("description")
    )


def test_every_key_of_the_schema_has_a_description() -> None:
    assert schema_fields_without_description() == []


def test_an_error_on_a_known_key_says_what_the_key_is_for() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + "vision: {threads: 12}\n", "c.yaml")
    (problem,) = info.value.problems
    assert problem.startswith("vision.threads (c.yaml:3): Input should be less than or equal to 8 (found 12)")
    assert problem.endswith("CPU threads for inference: Threads of each model's interpreter, and of "
                            "OpenCV's resizes; 1 leaves the other cores free.")


@pytest.mark.parametrize(
    ("lines", "key"),
    [
        ('state_dir: "/var/lib/st\\0ate"\n', "state_dir"),
        ('keys: {private_key: "/etc/dev\\0ice.key"}\n', "keys.private_key"),
        ('mqtt: {username: u, password_file: "/etc/p\\0w"}\n', "mqtt.password_file"),
        ('mqtt: {tls: {ca: "/etc/c\\0a"}}\n', "mqtt.tls.ca"),
        ('vision: {models_dir: "/opt/m\\0dels"}\n', "vision.models_dir"),
        ('outputs: {jsonl: "/tmp/o\\0ut.jsonl"}\n', "outputs.jsonl"),
    ],
)
def test_a_nul_byte_in_a_path_is_refused_naming_the_key(lines: str, key: str) -> None:
    """os.stat raised ValueError (embedded null byte) on such a path: a traceback, exit 1."""
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + lines, "c.yaml")
    (problem,) = info.value.problems
    assert problem.startswith(f"{key} (c.yaml:3): contains a NUL byte"), problem


@pytest.mark.parametrize(
    ("host", "said"),
    [
        ("broker..example", "has an empty label"),
        ("a" * 64 + ".example", "has a label of 64 characters"),
        (".".join(["b" * 60] * 5), "is 304 characters long"),
        ("broker example", "has the label 'broker example'"),
        ("-broker.example", "has the label '-broker'"),
        ("[::1]", "has brackets; an IPv6 address is written without them"),
    ],
)
def test_an_mqtt_host_that_is_no_host_name_is_refused(host: str, said: str) -> None:
    """paho's network thread died of UnicodeError (idna) on such names, while check-config passed."""
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + f"mqtt: {{host: '{host}', port: 1883}}\n", "c.yaml")
    (problem,) = info.value.problems
    assert problem.startswith(f"mqtt.host (c.yaml:3): mqtt.host {host!r} {said}"), problem
    assert "a host is an IP address or a DNS name" in problem


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "::1", "localhost", "broker.example.", "mqtt_1.lan", "bröker.example", "a" * 63]
)
def test_host_names_and_addresses_are_accepted(host: str) -> None:
    assert parse_config(MINIMAL + f"mqtt: {{host: '{host}'}}\n").mqtt.host == host


def test_the_receivers_broker_host_is_checked_as_mqtt_host_is() -> None:
    with pytest.raises(ValidationError, match="has an empty label"):
        MqttSourceSettings.model_validate({"kind": "mqtt", "host": "broker..example"})


def test_a_frame_period_longer_than_the_tracker_forgets_is_refused() -> None:
    """Each track is forgotten before the next frame (tests/analytics/test_tracker.py): the
    agent would run and never count anyone."""
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + "camera: {fps: 0.1}\n", "c.yaml")
    assert (
        "camera.fps (0.1) analyses one frame every 10 s, longer than "
        "analytics.tracker.forget_seconds (5.0)"
    ) in str(info.value)
    assert "set camera.fps to at least 0.2 or analytics.tracker.forget_seconds to at least 10" in str(
        info.value
    )
    assert parse_config(MINIMAL + "camera: {fps: 0.1}\nanalytics: {tracker: {forget_seconds: 10}}\n")
    assert parse_config(MINIMAL + "camera: {fps: 0.2}\n")


def test_windows_shorter_than_the_frame_period_are_refused() -> None:
    """A 10 s window with a frame every 20 s: every other window has no frame at all and
    publishes nothing."""
    text = MINIMAL + "camera: {fps: 0.05}\nanalytics: {window_seconds: 10, tracker: {forget_seconds: 30}}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yaml")
    assert (
        "analytics.window_seconds (10) is shorter than the 20 s between two frames at camera.fps (0.05)"
    ) in str(info.value)
    assert parse_config(text.replace("window_seconds: 10", "window_seconds: 20"))


@pytest.mark.parametrize("key", ["password", "mqtt_pass", "api_token", "secret", "passwd", "api_key"])
def test_a_secret_written_under_an_unknown_key_is_not_echoed(key: str) -> None:
    """``mqtt: {password: hunter2}`` said ``unknown key (found 'hunter2')``: under systemd that
    is the journal, readable by every admin (found by a new user's trial). A key whose name says
    it holds a secret gets no value shown, and a password is pointed at its file."""
    before = MINIMAL + "mqtt:\n  host: b.example\n"
    with pytest.raises(ConfigError) as info:
        parse_config(before + f"  {key}: hunter2\n", "c.yaml")
    (problem,) = info.value.problems
    assert "hunter2" not in problem
    line = before.count("\n") + 1
    assert problem.startswith(
        f"mqtt.{key} (c.yaml:{line}): unknown key (its value is not shown: the name says it may be a secret)"
    ), problem
    assert ("password_file" in problem) == key.startswith(("pass", "mqtt_pass")), problem


def _runnable(tmp_path: Path, extra: str) -> Path:
    generate_keypair(tmp_path / "keys")
    path = tmp_path / "agent.yaml"
    path.write_text(
        MINIMAL + "site: {jurisdiction: US, context: retail, purpose: analytics}\nmqtt: {enabled: false}\n"
        f"keys: {{private_key: {tmp_path / 'keys' / 'device.key'}}}\n"
        f"state_dir: {tmp_path / 'state'}\n{extra}"
    )
    return path


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        ("camera: {source: /nope/clip.mp4}\n", "camera.source /nope/clip.mp4: no such file or folder"),
        ("camera: {source: NOTES}\n", "camera.source {tmp}/NOTES: "),
        ("vision: {models_dir: /nonexistent}\n", "/nonexistent"),
    ],
    ids=["missing clip", "not a video", "no models"],
)
def test_check_config_refuses_the_clip_and_models_run_would_refuse(
    tmp_path: Path, extra: str, said: str
) -> None:
    """check-config said ``valid`` (exit 0) for these, and ``run`` then refused them (exit 2):
    docs/cli.md promises exit 0 means every file the config names is usable as ``run`` reads
    it (found by a new user's trial)."""
    (tmp_path / "NOTES").write_text("not a video\n")
    config = _runnable(tmp_path, extra.replace("NOTES", str(tmp_path / "NOTES")))
    proc = run_cli("check-config", "-c", str(config))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert said.format(tmp=tmp_path) in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_config_refuses_a_manifest_asking_for_an_input_the_agent_does_not_feed(tmp_path: Path) -> None:
    """A custom model's entry saying colour YUV: check-config said ``valid`` and the model was
    fed RGB; now it exits 2 like any other model problem, naming the manifest, entry and field."""
    models = tmp_path / "models"
    shutil.copytree(default_models_dir(), models)
    manifest = json.loads((models / "manifest.json").read_text(encoding="utf-8"))
    manifest["models"]["face_detection_full_range"]["input"]["color"] = "YUV"
    (models / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    proc = run_cli("check-config", "-c", str(_runnable(tmp_path, f"vision: {{models_dir: {models}}}\n")))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert (
        f"{models / 'manifest.json'}: entry 'face_detection_full_range' asks for what this agent does not "
        "implement: input.color is 'YUV'; allowed: 'RGB'"
    ) in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_config_takes_a_clip_that_run_reads(tmp_path: Path, sample_clip: Path) -> None:
    proc = run_cli("check-config", "-c", str(_runnable(tmp_path, f"camera: {{source: {sample_clip}}}\n")))
    assert proc.returncode == 0, proc.stderr
    assert "valid" in proc.stdout


def test_run_with_a_missing_clip_exits_2_naming_the_key_before_it_starts(tmp_path: Path) -> None:
    """``run`` started in full (audit ``start`` entry), then stopped with ``reason: stopped`` and no
    word in the audit log of why; the error did not name camera.source."""
    proc = run_cli("run", "-c", str(_runnable(tmp_path, "camera: {source: /nope/clip.mp4}\n")))
    assert proc.returncode == 2, proc.stderr
    assert "camera.source /nope/clip.mp4: no such file or folder" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    segments = sorted((tmp_path / "state" / "audit").glob("segment-*.jsonl"))
    kinds = [json.loads(line)["kind"] for p in segments for line in p.read_text().splitlines()]
    assert "start" not in kinds, kinds


@pytest.mark.parametrize(
    ("line", "hidden"),
    [
        ("mqtt:\n  host: b.example\n  auth: {username: u, password: hunter2}\n", "hunter2"),
        ("keys:\n  private_key_data: '-----BEGIN PRIVATE KEY----- MC4CAQAwBQYDK2VwBCIE'\n", "MC4CAQAw"),
    ],
    ids=["a mapping", "a PEM key"],
)
def test_a_secret_inside_an_unknown_mapping_or_a_pem_key_is_not_echoed(line: str, hidden: str) -> None:
    """The name check let ``auth: {username: u, password: hunter2}`` print the mapping whole and
    ``private_key_data: -----BEGIN PRIVATE KEY-----...`` print the key (found by review)."""
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + line, "c.yaml")
    (problem,) = info.value.problems
    assert hidden not in problem, problem
    assert "unknown key" in problem, problem


def test_check_config_loads_the_models_on_the_cpu_beside_a_running_coral(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Edge TPU is held by the running service: check-config (run before a reload) opened
    it too, and a valid config got exit 2 (found by review). The models' hashes and shapes are
    checked on the CPU; the Coral's own checks are ``check_accelerator``'s."""
    from agent.cli import main  # noqa: PLC0415
    from agent.vision import edgetpu, pipeline  # noqa: PLC0415

    asked: list[str] = []
    real = pipeline.VisionPipeline.from_config

    def from_config(cfg: Any) -> Any:
        asked.append(cfg.accelerator)
        return real(cfg)

    monkeypatch.setattr(edgetpu, "check_accelerator", lambda _v: None)
    monkeypatch.setattr(pipeline.VisionPipeline, "from_config", staticmethod(from_config))
    assert main(["check-config", "-c", str(_runnable(tmp_path, "vision: {accelerator: coral}\n"))]) == 0
    assert asked == ["cpu"]


def test_a_device_key_that_cannot_be_read_is_named_by_its_setting(tmp_path: Path) -> None:
    """The error named the file only; an installer edits keys.private_key (found by a new-user trial)."""
    path = tmp_path / "agent.yaml"
    path.write_text(MINIMAL + "site: {jurisdiction: US, context: retail, purpose: analytics}\n"
                    f"keys: {{private_key: {tmp_path / 'keys' / 'device.key'}}}\n")
    proc = run_cli("check-config", "-c", str(path))
    assert proc.returncode == 2
    key = tmp_path / "keys" / "device.key"
    assert proc.stderr.startswith(
        f"emotion-agent: error: keys.private_key: {key}: device private key not found"
    ), proc.stderr


def test_check_config_names_every_file_that_cannot_be_used_at_once(tmp_path: Path) -> None:
    """It stopped at the first: the key, then (once fixed) the password file, then the CA, one
    per run (found by a new-user trial; the README says every problem)."""
    path = tmp_path / "agent.yaml"
    path.write_text(
        MINIMAL + "site: {jurisdiction: US, context: retail, purpose: analytics}\n"
        f"keys: {{private_key: {tmp_path / 'none.key'}}}\n"
        f"mqtt: {{host: b, port: 8883, username: a, password_file: {tmp_path / 'pw'}, "
        f"tls: {{ca: {tmp_path / 'ca.crt'}}}}}\n"
    )
    proc = run_cli("check-config", "-c", str(path))
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert lines[0] == "emotion-agent: error: 3 file(s) the config names cannot be used", proc.stderr
    assert lines[1].startswith(f"  - keys.private_key: {tmp_path / 'none.key'}: device private key not found")
    assert lines[2] == f"  - mqtt.password_file {tmp_path / 'pw'}: password file not found"
    assert lines[3] == f"  - mqtt.tls.ca {tmp_path / 'ca.crt'}: CA certificate not found"
