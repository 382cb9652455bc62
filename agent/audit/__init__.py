"""The audit log and the auditor's tools: prove, without trusting the device, that no image
was kept and every published number obeyed the policy.

``AuditLog`` (log.py) writes entries (entries.py) into an RFC 9162 Merkle tree (merkle.py)
with C2SP signed checkpoints (note.py) in segment files (store.py) that retention removes
whole (purge.py); ``verify_log`` (verify.py, with the promises in invariants.py) and the HTML
report (report.py) are the auditor's side. Pure logic: no camera, model or MQTT import.
"""

from agent.audit.log import AuditLog
from agent.audit.note import SignedCheckpoint
from agent.audit.settings import AuditSettings

__all__ = ["AuditLog", "AuditSettings", "SignedCheckpoint"]
