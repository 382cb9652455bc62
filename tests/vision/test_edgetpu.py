"""Why the Edge TPU cannot be used, in one line that says what to do: the compiled model, the
library, the device and its group. The device probe reads a fake sysfs/dev tree with a fake
user, so every branch runs here without a Coral; check-config reports the same lines (exit 2)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.errors import BackendUnavailable, ModelError
from agent.vision.edgetpu import (
    SystemProbe,
    TpuNode,
    can_read_write,
    check_accelerator,
    coral_problem,
    device_problem,
)
from agent.vision.manifest import default_models_dir, model_spec
from agent.vision.settings import VisionConfig

MODELS = default_models_dir()
NOBODY = 65534


def compiled(folder: Path, name: str) -> dict[str, str]:
    """A stand-in compiled file (it is hashed, never run here) and its manifest entry."""
    (folder / name).write_bytes(b"edgetpu " + name.encode())
    return {"file": name, "sha256": hashlib.sha256((folder / name).read_bytes()).hexdigest()}


@pytest.fixture
def models_with_edgetpu(tmp_path: Path) -> Path:
    """The vendored models plus an Edge TPU file for every precision, as after compiling."""
    dest = tmp_path / "models"
    shutil.copytree(MODELS, dest)
    path = dest / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    for name, entry in data["models"].items():
        entry["edgetpu"] = compiled(dest, f"{name}_edgetpu.tflite")
        for variant in (entry.get("variants") or {}).values():
            variant["edgetpu"] = compiled(dest, f"{name}_int8_edgetpu.tflite")
    path.write_text(json.dumps(data), encoding="utf-8")
    return dest


def fake_machine(tmp_path: Path, usb: tuple[str, str] | None = None, apex: bool = False) -> tuple[Path, Path]:
    """(sys, dev) roots holding a USB device with these ids at bus 2 device 3 and/or /dev/apex_0,
    each node mode 0660 owned by root:root, as before any udev rule gave it a group."""
    sys_root, dev_root = tmp_path / "sys", tmp_path / "dev"
    hub = sys_root / "bus/usb/devices/usb2"
    hub.mkdir(parents=True)
    (hub / "idVendor").write_text("1d6b\n")
    (hub / "idProduct").write_text("0003\n")
    (hub / "busnum").write_text("2\n")
    (hub / "devnum").write_text("1\n")
    (sys_root / "bus/usb/devices/2-1:1.0").mkdir()  # an interface entry: no ids
    if usb is not None:
        dev = sys_root / "bus/usb/devices/2-1"
        dev.mkdir()
        (dev / "idVendor").write_text(usb[0] + "\n")
        (dev / "idProduct").write_text(usb[1] + "\n")
        (dev / "busnum").write_text("2\n")
        (dev / "devnum").write_text("3\n")
        node = dev_root / "bus/usb/002/003"
        node.parent.mkdir(parents=True)
        node.write_bytes(b"")
        node.chmod(0o660)
    if apex:
        dev_root.mkdir(exist_ok=True)
        (dev_root / "apex_0").write_bytes(b"")
        (dev_root / "apex_0").chmod(0o660)
    return sys_root, dev_root


def probe(
    roots: tuple[Path, Path], gids: frozenset[int] = frozenset(), library: str | None = None
) -> SystemProbe:
    return SystemProbe(roots[0], roots[1], uid=NOBODY, gids=gids, load_library=lambda: library)


def test_int8_model_without_edgetpu_file_names_model_key_command_and_docs() -> None:
    why = coral_problem(model_spec(MODELS, "emotion", precision="int8"))
    assert why == (
        "the manifest has no Edge TPU variant of emotion (models/manifest.json 'variants.int8.edgetpu'); "
        "compile it with `edgetpu_compiler -s -o models models/emotion_fer_int8.tflite` on an x86-64 host, "
        "then set its file (emotion_fer_int8_edgetpu.tflite) and sha256 (`sha256sum`) there (docs/coral.md)"
    )


def test_float_model_is_told_to_use_its_int8_variant() -> None:
    why = coral_problem(model_spec(MODELS, "face_detection_full_range"))
    assert why is not None
    assert "the Edge TPU runs only int8 models: set vision.precision: int8" in why
    assert "`edgetpu_compiler -s -o models models/face_detection_full_range_int8.tflite`" in why
    assert "under models.face_detection_full_range.variants.int8.edgetpu (docs/coral.md)" in why


def test_model_without_int8_variant_says_which_detector_has_one() -> None:
    why = coral_problem(model_spec(MODELS, "face_detection_short_range"))
    assert why is not None
    assert "face_detection_short_range has no int8 variant to compile" in why
    assert "use vision.detector: full_range, which has one" in why


def test_missing_library_says_to_run_coral_setup(models_with_edgetpu: Path, tmp_path: Path) -> None:
    spec = model_spec(models_with_edgetpu, "emotion", precision="int8")
    why = coral_problem(
        spec, probe(fake_machine(tmp_path), library="libedgetpu.so.1: cannot open shared object file")
    )
    assert why is not None
    assert why.startswith("libedgetpu.so.1 was not found (libedgetpu.so.1: cannot open shared object file)")
    assert "`sudo tools/coral-setup --usb`" in why
    assert "libedgetpu1-std" in why


def test_no_device_names_both_kinds_and_what_to_plug_in(models_with_edgetpu: Path, tmp_path: Path) -> None:
    spec = model_spec(models_with_edgetpu, "emotion", precision="int8")
    why = coral_problem(spec, probe(fake_machine(tmp_path)))
    assert why is not None
    assert why.startswith("no Edge TPU device found: no USB Accelerator (1a6e:089a or 18d1:9302")
    assert "no PCIe/M.2 card (/dev/apex_0)" in why


@pytest.mark.parametrize("ids", [("1a6e", "089a"), ("18d1", "9302")])
def test_usb_accelerator_without_access_names_plugdev(
    models_with_edgetpu: Path, tmp_path: Path, ids: tuple[str, str]
) -> None:
    """Found by its ids before and after the firmware load; the user is not in the node's group."""
    roots = fake_machine(tmp_path, usb=ids)
    why = coral_problem(model_spec(models_with_edgetpu, "emotion"), probe(roots))
    assert why is not None
    node = roots[1] / "bus/usb/002/003"
    assert why.startswith(
        f"the Edge TPU {node} is there but user nobody may not read and write it (permission denied"
    )
    assert "libedgetpu's udev rule gives it to group plugdev: run `sudo tools/coral-setup --usb`" in why
    assert (
        "the user must be in group plugdev (`m nobody plugdev` in /etc/sysusers.d/emotion-agent.conf" in why
    )


def test_usb_accelerator_in_the_users_group_is_usable(models_with_edgetpu: Path, tmp_path: Path) -> None:
    roots = fake_machine(tmp_path, usb=("18d1", "9302"))
    gid = (roots[1] / "bus/usb/002/003").stat().st_gid
    assert (
        coral_problem(model_spec(models_with_edgetpu, "emotion"), probe(roots, gids=frozenset({gid}))) is None
    )


def test_pcie_card_without_access_names_apex_and_its_udev_rule(
    models_with_edgetpu: Path, tmp_path: Path
) -> None:
    roots = fake_machine(tmp_path, apex=True)
    why = coral_problem(model_spec(models_with_edgetpu, "emotion"), probe(roots))
    assert why is not None
    assert why.startswith(
        f"the Edge TPU {roots[1] / 'apex_0'} is there but user nobody may not read and write it"
    )
    assert "run `sudo tools/coral-setup --pcie` (udev rule /etc/udev/rules.d/65-apex.rules) and reboot" in why
    assert "the user must be in group apex" in why


def test_one_usable_node_is_enough() -> None:
    nodes = [
        TpuNode("/dev/apex_0", "pcie", "root", False),
        TpuNode("/dev/bus/usb/002/003", "usb", "plugdev", True),
    ]
    assert device_problem(nodes, "emotion-agent") is None


PERMISSIONS = [  # (mode, owner, group, uid, gids) -> may read and write
    ((0o660, 0, 46, 998, frozenset({46})), True),
    ((0o660, 0, 46, 998, frozenset({44})), False),
    ((0o640, 0, 46, 998, frozenset({46})), False),
    ((0o600, 998, 0, 998, frozenset()), True),
    ((0o666, 0, 0, 998, frozenset()), True),
    ((0o600, 0, 0, 0, frozenset()), True),
]


@pytest.mark.parametrize(("case", "ok"), PERMISSIONS)
def test_read_write_permission(case: tuple[int, int, int, int, frozenset[int]], ok: bool) -> None:
    assert can_read_write(*case) is ok


def test_check_accelerator_refuses_coral_without_a_model_and_passes_cpu_and_auto() -> None:
    with pytest.raises(
        BackendUnavailable,
        match=r"^vision.accelerator coral: the manifest has no Edge TPU variant of face_detection_full_range",
    ):
        check_accelerator(VisionConfig(accelerator="coral"))
    check_accelerator(VisionConfig(accelerator="auto"))
    check_accelerator(VisionConfig(accelerator="cpu"))


def test_check_accelerator_with_auto_precision_checks_every_precision_it_may_pick(
    models_with_edgetpu: Path,
) -> None:
    data = json.loads((models_with_edgetpu / "manifest.json").read_text())
    data["models"]["emotion"]["variants"]["int8"]["edgetpu"] = None
    (models_with_edgetpu / "manifest.json").write_text(json.dumps(data))
    cfg = VisionConfig(accelerator="coral", precision="auto", models_dir=str(models_with_edgetpu))
    with pytest.raises(
        BackendUnavailable,
        match=r"no Edge TPU variant of emotion \(models/manifest.json 'variants.int8.edgetpu'\)",
    ):
        check_accelerator(cfg, SystemProbe(load_library=lambda: None))


def test_check_accelerator_refuses_an_altered_compiled_file(
    models_with_edgetpu: Path, tmp_path: Path
) -> None:
    """Model, library and device all fine: the named compiled file is still hashed, as run does."""
    roots = fake_machine(tmp_path, apex=True)
    gid = (roots[1] / "apex_0").stat().st_gid
    cfg = VisionConfig(accelerator="coral", precision="int8", models_dir=str(models_with_edgetpu))
    check_accelerator(cfg, probe(roots, gids=frozenset({gid})))
    (models_with_edgetpu / "emotion_int8_edgetpu.tflite").write_bytes(b"altered")
    with pytest.raises(
        ModelError, match=r"emotion_int8_edgetpu.tflite has sha256 [0-9a-f]{64}, but the manifest"
    ):
        check_accelerator(cfg, probe(roots, gids=frozenset({gid})))


def coral_config(tmp_path: Path, source: Path) -> Path:
    """A valid config with ``accelerator: coral`` and mqtt off, its key made."""
    from agent.crypto import generate_keypair  # noqa: PLC0415 - only these tests make a key

    generate_keypair(tmp_path / "keys")
    cfg = tmp_path / "coral.yaml"
    cfg.write_text(
        "schema_version: 1\ndevice_id: lobby-1\n"
        "site: {jurisdiction: US, context: retail, purpose: analytics}\n"
        f"keys: {{private_key: {tmp_path / 'keys' / 'device.key'}}}\nstate_dir: {tmp_path / 'state'}\n"
        f"camera: {{source: {source}}}\nmqtt: {{enabled: false}}\n"
        "vision: {accelerator: coral, precision: int8}\n"
    )
    return cfg


COMPILE_LINE = (
    "emotion-agent: error: vision.accelerator coral: the manifest has no Edge TPU variant of "
    "face_detection_full_range (models/manifest.json 'variants.int8.edgetpu'); compile it with "
    "`edgetpu_compiler -s -o models models/face_detection_full_range_int8.tflite`"
)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, check=False)


def test_check_config_reports_coral_without_a_model_in_one_line_exit_2(tmp_path: Path, media: Path) -> None:
    proc = cli("check-config", "-c", str(coral_config(tmp_path, media / "astronaut.png")))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(COMPILE_LINE)
    assert proc.stderr.endswith("(docs/coral.md)\n")


def test_run_refuses_coral_without_a_model_at_start_with_the_same_line(tmp_path: Path, media: Path) -> None:
    proc = cli("run", "-c", str(coral_config(tmp_path, media / "astronaut.png")))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    last = proc.stderr.splitlines()[-1]
    assert last.startswith(COMPILE_LINE)
    assert last.endswith("(docs/coral.md)")
