"""Why a Coral Edge TPU cannot be used here, in one line that says what to do (docs/coral.md).

Three things must hold before ``vision.accelerator: coral`` can open a model: the manifest names
an Edge TPU compiled file for it, the runtime library ``libedgetpu.so.1`` loads, and an Edge TPU
device node exists that the agent's user may read and write. The diagnosis is pure
(``model_problem``, ``device_problem``, ``can_read_write``); the I/O sits in ``SystemProbe``,
whose roots and identity a test replaces with a fake sysfs/dev tree and a fake user.

Device facts, from Coral's packages: the USB Accelerator shows up as ``1a6e:089a`` (Global
Unichip) until libedgetpu loads its firmware, then as ``18d1:9302`` (Google); libedgetpu's udev
rule gives both to group ``plugdev``. A PCIe/M.2 card is ``/dev/apex_N`` from the gasket driver
(``gasket-dkms``), root-only until a rule such as ``SUBSYSTEM=="apex", MODE="0660",
GROUP="apex"`` gives it to group ``apex``. ``tools/coral-setup`` installs both.
"""

from __future__ import annotations

import ctypes
import grp
import os
import pwd
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import BackendUnavailable
from agent.vision.manifest import (
    ModelSpec,
    int8_variant,
    load_manifest,
    manifest_entry,
    model_spec,
    models_folder,
    verify_file,
)

if TYPE_CHECKING:
    from agent.vision.settings import VisionConfig

EDGETPU_LIBRARY = "libedgetpu.so.1"
USB_IDS = (("1a6e", "089a"), ("18d1", "9302"))
"""(vendor, product) of the USB Accelerator before and after its firmware is loaded."""
DOCS = "docs/coral.md"
SETUP = "sudo tools/coral-setup"


@dataclass(frozen=True)
class TpuNode:
    """One Edge TPU device node and whether this process's user may read and write it."""

    path: str
    kind: str
    """``usb`` or ``pcie``."""
    group: str
    """The node's group name (or number when it has no name)."""
    accessible: bool


def manifest_key(spec: ModelSpec) -> str:
    """Where ``models/manifest.json`` names the Edge TPU file for this spec's precision."""
    return "edgetpu" if spec.precision == "float" else f"variants.{spec.precision}.edgetpu"


def compile_command(int8_file: str) -> str:
    """The compiler call for a full-integer model in ``models/`` (run on an x86-64 host)."""
    return f"edgetpu_compiler -s -o models models/{int8_file}"


def compiled_name(int8_file: str) -> str:
    """The file ``edgetpu_compiler`` writes for ``int8_file``: ``<stem>_edgetpu.tflite``."""
    return f"{Path(int8_file).stem}_edgetpu.tflite"


def model_problem(spec: ModelSpec, int8_file: str | None) -> str | None:
    """None when the manifest names an Edge TPU file for ``spec``; else what to compile and where
    to put it. ``int8_file`` is the entry's full-integer variant, if it has one."""
    if spec.edgetpu_path is not None and spec.edgetpu_sha256 is not None:
        return None
    head = (
        f"the manifest has no Edge TPU variant of {spec.name} (models/manifest.json '{manifest_key(spec)}')"
    )
    if int8_file is None:
        return (
            f"{head}, and {spec.name} has no int8 variant to compile (the Edge TPU runs only "
            "full-integer models): use vision.detector: full_range, which has one, "
            f"or vision.accelerator: cpu ({DOCS})"
        )
    fill = (
        f"`{compile_command(int8_file)}` on an x86-64 host, then set its file "
        f"({compiled_name(int8_file)}) and sha256 (`sha256sum`)"
    )
    if spec.precision == "int8":
        return f"{head}; compile it with {fill} there ({DOCS})"
    return (
        f"{head}; the Edge TPU runs only int8 models: set vision.precision: int8, compile with "
        f"{fill} under models.{spec.name}.variants.int8.edgetpu ({DOCS})"
    )


def int8_variant_file(spec: ModelSpec) -> str | None:
    """The file name of ``spec``'s int8 variant in its manifest, if the entry has one."""
    variant = int8_variant(manifest_entry(spec.path.parent, spec.name))
    return str(variant["file"]) if variant is not None and "file" in variant else None


def library_problem(error: str | None) -> str | None:
    """None when libedgetpu loaded; else what to install."""
    if error is None:
        return None
    return (
        f"{EDGETPU_LIBRARY} was not found ({error}): install the Edge TPU runtime "
        f"`libedgetpu1-std` from Coral's apt repository with `{SETUP} --usb` (or `--pcie` for a "
        "PCIe/M.2 card with the gasket driver, /dev/apex_0), plug in the Coral USB Accelerator, "
        f"and give the agent access to it ({DOCS}); or set vision.accelerator to cpu or auto"
    )


def device_problem(nodes: Sequence[TpuNode], user: str) -> str | None:
    """None when some Edge TPU node is usable; else whether none is present or which group the
    agent's ``user`` must be in (permission denied)."""
    if any(n.accessible for n in nodes):
        return None
    if not nodes:
        return (
            "no Edge TPU device found: no USB Accelerator (1a6e:089a or 18d1:9302 under "
            "/sys/bus/usb/devices) and no PCIe/M.2 card (/dev/apex_0); plug the USB Accelerator "
            f"into a USB 3 port, or for PCIe/M.2 run `{SETUP} --pcie` and reboot ({DOCS})"
        )
    node = nodes[0]
    wanted = "plugdev" if node.kind == "usb" else "apex"
    fix = (
        f"libedgetpu's udev rule gives it to group plugdev: run `{SETUP} --usb` and replug it"
        if node.kind == "usb"
        else f"run `{SETUP} --pcie` (udev rule /etc/udev/rules.d/65-apex.rules) and reboot"
    )
    return (
        f"the Edge TPU {node.path} is there but user {user} may not read and write it "
        f"(permission denied; its group is {node.group}): {fix}; the user must be in group "
        f"{wanted} (`m {user} {wanted}` in /etc/sysusers.d/emotion-agent.conf, applied by "
        f"systemd-sysusers) ({DOCS})"
    )


def can_read_write(mode: int, owner: int, group: int, uid: int, gids: frozenset[int]) -> bool:
    """Whether a user (``uid`` in groups ``gids``) may read and write a node with these bits."""
    if uid == 0:
        return True
    if uid == owner:
        bits = stat.S_IRUSR | stat.S_IWUSR
    elif group in gids:
        bits = stat.S_IRGRP | stat.S_IWGRP
    else:
        bits = stat.S_IROTH | stat.S_IWOTH
    return mode & bits == bits


def _load_library() -> str | None:
    try:
        ctypes.CDLL(EDGETPU_LIBRARY)
    except OSError as exc:
        return str(exc)
    return None


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@dataclass(frozen=True)
class SystemProbe:
    """Reads the machine: the library, sysfs and /dev. Tests give other roots and identity."""

    sys_root: Path = Path("/sys")
    dev_root: Path = Path("/dev")
    uid: int = field(default_factory=os.geteuid)
    gids: frozenset[int] = field(default_factory=lambda: frozenset({os.getegid(), *os.getgroups()}))
    load_library: Callable[[], str | None] = _load_library
    """None when libedgetpu loads, else the loader's error."""

    def user(self) -> str:
        return _user_name(self.uid)

    def nodes(self) -> list[TpuNode]:
        """Every Edge TPU node present: USB accelerators by their ids, then ``apex_N`` nodes."""
        found = [self._node(p, "usb") for p in self._usb_paths()]
        found += [self._node(p, "pcie") for p in sorted(self.dev_root.glob("apex_*"))]
        return [n for n in found if n is not None]

    def _usb_paths(self) -> list[Path]:
        paths = []
        for dev in sorted((self.sys_root / "bus/usb/devices").glob("*")):
            try:
                ids = ((dev / "idVendor").read_text().strip(), (dev / "idProduct").read_text().strip())
                if ids not in USB_IDS:
                    continue
                bus, num = int((dev / "busnum").read_text()), int((dev / "devnum").read_text())
            except (OSError, ValueError):
                continue  # an interface or hub entry without those attributes
            paths.append(self.dev_root / f"bus/usb/{bus:03d}/{num:03d}")
        return paths

    def _node(self, path: Path, kind: str) -> TpuNode | None:
        try:
            st = path.stat()
        except OSError:
            return None
        ok = can_read_write(st.st_mode, st.st_uid, st.st_gid, self.uid, self.gids)
        return TpuNode(str(path), kind, _group_name(st.st_gid), ok)


def coral_problem(spec: ModelSpec, probe: SystemProbe | None = None) -> str | None:
    """None when ``spec`` can run on an Edge TPU here; else the first thing missing, in the order
    an installer fixes them: the compiled model, the runtime library, the device and its group."""
    why = model_problem(spec, int8_variant_file(spec))
    if why is not None:
        return why
    probe = probe or SystemProbe()
    return library_problem(probe.load_library()) or device_problem(probe.nodes(), probe.user())


def check_accelerator(vision: VisionConfig, probe: SystemProbe | None = None) -> None:
    """``check-config``: with ``accelerator: coral``, raise BackendUnavailable (exit 2) for what
    ``run`` would refuse: the models it opens (for ``precision: auto``, every precision it may
    pick) and their compiled files' sha256, then the library and the device. ``cpu`` and ``auto``
    never fail here."""
    if vision.accelerator != "coral":
        return
    folder = models_folder(vision.models_dir)  # a mistyped setting is named as such
    models = load_manifest(folder)["models"]
    specs = []
    for name in (f"face_detection_{vision.detector}", "emotion"):  # as VisionPipeline opens them
        if vision.precision != "auto":
            precisions = [vision.precision]
        else:
            entry = models.get(name)
            has_int8 = int8_variant(entry if isinstance(entry, dict) else {}) is not None
            precisions = ["float", "int8"] if has_int8 else ["float"]
        specs += [model_spec(folder, name, precision=p) for p in precisions]
    problems = [model_problem(spec, int8_variant_file(spec)) for spec in specs]
    probe = probe or SystemProbe()
    problems += [library_problem(probe.load_library())]
    problems += [device_problem(probe.nodes(), probe.user())]
    first = next((why for why in problems if why is not None), None)
    if first is not None:
        raise BackendUnavailable(f"vision.accelerator coral: {first}")
    for spec in specs:  # the compiled files named must be there, unaltered (ModelError)
        if spec.edgetpu_path is not None and spec.edgetpu_sha256 is not None:
            verify_file(spec.edgetpu_path, spec.edgetpu_sha256)
