"""The audit log and the auditor's tools: prove, without trusting the device, that no image
was kept and every published number obeyed the policy.

``AuditLog`` (log.py) writes entries (entries.py) into an RFC 9162 Merkle tree (merkle.py)
with C2SP signed checkpoints (note.py) in segment files (store.py) that retention removes
whole (purge.py); ``verify_log`` (verify.py, with the promises in invariants.py) and the HTML
report (report.py) are the auditor's side. Pure logic: no camera, model or MQTT import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.audit.log import AuditLog
    from agent.audit.note import SignedCheckpoint
    from agent.audit.settings import AuditConfig

__all__ = ["AuditConfig", "AuditLog", "SignedCheckpoint"]

_LAZY = {
    "AuditLog": "agent.audit.log",
    "SignedCheckpoint": "agent.audit.note",
    "AuditConfig": "agent.audit.settings",
}
"""Imported on first use: ``agent.config`` reads ``agent.audit.settings``, and loading the log
(cryptography, about 10 MB resident) there would weigh on every command, ``bench`` included."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
