"""What an audit entry may say: one strict schema per kind, integers only, never an image.

An entry is one line of RFC 8785 canonical JSON::

    {"data":{...},"i":<index>,"kind":"<kind>","salt":"<32 hex digits>","ts":<unix ms>}

and its Merkle leaf is SHA-256(0x00 || the line without its newline). The salt (128 random
bits, new for each entry) is there because the checkpoints' proofs are published: a subtree's
hash over entries whose every field is public or guessable (a suppressed window's ``window``
entry, the ``publish`` records of messages anyone subscribed to) and one ``frames`` entry with a
few thousand likely values gave that entry's face-dependent figures back by trying them all
(found by review: the frames analysed, dropped and the longest frame lifetime of a suppressed
window, from the published proofs alone). Logs written before it have no salt and still verify.

``data`` is checked against the kind's schema: unknown kinds and unknown fields are refused,
numbers must be integers within ±(2^53−1), strings are short tokens or hex hashes, and no
schema has room for a list of numbers — so a pixel row, a crop, a box or a track id cannot be
written.

Older logs stay readable: fields added since (``Policy.dp_daily_budget_milli``, the measured
``frames`` fields) are optional when reading, and the ``frames`` field they replaced
(``pixel_bytes_persisted``, a constant the device never measured) is accepted when reading
only. An entry is re-encoded with exactly the fields it holds, so an old line stays canonical.
``append`` (``legacy=False``) requires the current form.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import rfc8785
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from agent.errors import PayloadError

MAX_SAFE = 2**53 - 1
SALT_BYTES = 16
"""An entry's salt: 128 random bits, as lower-case hex."""
_SALT = re.compile(rf"[0-9a-f]{{{2 * SALT_BYTES}}}")
_KEYS = ({"data", "i", "kind", "ts"}, {"data", "i", "kind", "salt", "ts"})

Count = Annotated[int, Field(strict=True, ge=0, le=MAX_SAFE)]
Token = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
Hex64 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
B64Hash = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]{43}=$")]
KeyPath = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\[\]-]{1,128}$")]
Text = Annotated[str, StringConstraints(max_length=500)]
Topic = Annotated[str, StringConstraints(pattern=r"^[^#+\x00]{1,256}$")]
Version = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.+-]{1,64}$")]
SegmentName = Annotated[str, StringConstraints(pattern=r"^segment-[0-9]{12}\.jsonl$")]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @staticmethod
    def current(info: ValidationInfo) -> bool:
        """True when validating for ``append`` (the current form), False when reading a log."""
        return not (isinstance(info.context, dict) and info.context.get("legacy"))

    def require(self, info: ValidationInfo, *names: str) -> None:
        missing = [n for n in names if n not in self.model_fields_set]
        if missing and self.current(info):
            raise ValueError(f"required field {missing[0]!r} is missing")


class Policy(_Data):
    """The rules in force; the verifier checks later entries against them."""

    min_people: int = Field(strict=True, ge=2, le=1000, description="k")
    window_seconds: int = Field(strict=True, ge=1, le=86400)
    audit_days: int = Field(strict=True, ge=1, le=3650, description="retention.audit_days")
    max_frame_lifetime_ms: int = Field(strict=True, ge=1, le=600_000)
    jurisdiction: Version
    context: Token
    purpose: Token
    dp_epsilon_milli: Count | None = None
    dp_daily_budget_milli: Count | None = None
    """analytics.dp.daily_budget × 1000 (null when DP is off); absent in logs written before it."""

    @model_validator(mode="after")
    def _current_form(self, info: ValidationInfo) -> Policy:
        self.require(info, "dp_epsilon_milli", "dp_daily_budget_milli")
        return self


class StartData(_Data):
    device_id: Token
    software_version: Version
    model_hashes: dict[Token, Hex64] = Field(max_length=16)
    config_hash: Hex64
    policy: Policy
    boot: Count


class StopData(_Data):
    reason: Token
    uptime_ms: Count


class FramesData(_Data):
    """Frame accounting for one window, each figure counted where it happens:
    captured + (queued at the previous window's end) = analysed + dropped + discarded + queued."""

    window_start_ms: Count
    window_ms: Count
    captured: Count
    analysed: Count
    dropped: Count
    discarded: Count
    lifetime_max_ms: Count
    lifetime_p99_ms: Count
    queued: Count | None = None
    """Frames captured but still waiting for analysis when the window's figures were taken."""
    state_files_scanned: Count | None = None
    state_image_files: Count | None = None
    """Files in state_dir whose first bytes are an image or video signature, at window close."""
    pixel_bytes_persisted: Count | None = None
    """Legacy (read only): a constant 0 in logs written before the scan replaced it."""

    @model_validator(mode="after")
    def _current_form(self, info: ValidationInfo) -> FramesData:
        if self.current(info):
            self.require(info, "queued", "state_files_scanned", "state_image_files")
            if "pixel_bytes_persisted" in self.model_fields_set:
                raise ValueError("'pixel_bytes_persisted' is a legacy field: write the measured "
                                 "state_image_files instead")
        elif {"pixel_bytes_persisted", "state_image_files"} <= self.model_fields_set:
            raise ValueError("an entry holds either the legacy or the measured fields, not both")
        elif not self.model_fields_set & {"pixel_bytes_persisted", "state_image_files"}:
            raise ValueError("required field 'state_image_files' is missing")
        return self

    @property
    def legacy(self) -> bool:
        return "pixel_bytes_persisted" in self.model_fields_set


class WindowData(_Data):
    window_start_ms: Count
    window_ms: Count
    people: Count
    published: bool
    suppressed: Token | None = None
    k: int = Field(strict=True, ge=1, le=1000)
    dp_spent_micro: Count | None = None
    """Epsilon × 10^6 this window took from the day's budget; null when DP is off. The budget
    file is rebuilt from these when it is missing."""

    @model_validator(mode="after")
    def _current_form(self, info: ValidationInfo) -> WindowData:
        self.require(info, "dp_spent_micro")
        return self


class PublishData(_Data):
    topic: Topic
    seq: Count
    payload_sha256: Hex64


class ConfigChangeData(_Data):
    config_hash_before: Hex64
    config_hash_after: Hex64
    keys: list[KeyPath] = Field(max_length=64)


class PolicyChangeData(_Data):
    policy: Policy
    reason: Token


class PrivacyModeData(_Data):
    mode: Token
    source: Token


Kid = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:+/=-]{1,128}$")]
RawKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{43}$")]


class KeyEventData(_Data):
    """``boot`` (the key a run signs with) or ``rotation`` (``kid`` announces ``new_kid``;
    both public keys as the JWK's ``x``, so a verifier can follow: agent/audit/rotation.py)."""

    event: Token
    kid: Kid
    new_kid: Kid | None = None
    old_key: RawKey | None = None
    new_key: RawKey | None = None

    @model_validator(mode="after")
    def _rotation_fields(self) -> KeyEventData:
        extra = {"new_kid", "old_key", "new_key"}
        given = extra & self.model_fields_set
        if self.event == "rotation" and given != extra:
            missing = sorted(extra - given)
            raise ValueError(f"a rotation names new_kid, old_key and new_key (missing: {missing})")
        if self.event != "rotation" and given:
            raise ValueError(f"{sorted(given)[0]!r} belongs to a rotation event only")
        return self


class ErrorData(_Data):
    code: Token
    message: Text


class PurgedSegment(_Data):
    name: SegmentName
    first: Count
    count: Count
    last_ts_ms: Count
    root: B64Hash
    """MTH of the segment's own leaves, so a kept export can be matched later."""


class PurgeData(_Data):
    segments: list[PurgedSegment] = Field(min_length=1, max_length=10_000)
    first_kept: Count
    root_at_first_kept: B64Hash
    retention_days: int = Field(strict=True, ge=1, le=3650)
    cutoff_ms: Count


class SegmentData(_Data):
    """First entry of every segment: the right edge of the tree before it and the policy in
    force, so older segments can be purged and the rest still verifies on its own."""

    previous: SegmentName | None
    edge: list[B64Hash] = Field(max_length=64)
    policy: Policy | None = None
    """The policy in force when the segment started, so purging old segments keeps it known."""
    start: StartData | None = None
    """The last start entry's data (software, models, config), for the same reason."""
    checkpoint_every: int = Field(strict=True, ge=1, le=1_000_000)
    """audit.checkpoint_every_entries of this run: more entries than this without a signed
    checkpoint means one was deleted."""
    queued: Count | None = None
    """``queued`` of the last ``frames`` entry before this segment since the last ``start`` (0
    if none): what the next ``frames`` entry starts from, so a purge of the segments before it
    keeps the frame accounting whole. Absent in logs written before it (read as 0)."""


SCHEMAS: dict[str, type[_Data]] = {
    "start": StartData,
    "stop": StopData,
    "frames": FramesData,
    "window": WindowData,
    "publish": PublishData,
    "config_change": ConfigChangeData,
    "policy_change": PolicyChangeData,
    "privacy_mode": PrivacyModeData,
    "key_event": KeyEventData,
    "error": ErrorData,
    "purge": PurgeData,
    "segment": SegmentData,
}
INTERNAL_KINDS = frozenset({"purge", "segment"})
"""Kinds only the log itself writes."""

CHECKPOINT_TOPIC_SUFFIX = "/audit/checkpoint"


def records_a_checkpoint(kind: str, fields: Mapping[str, Any]) -> bool:
    """The ``publish`` record of a checkpoint's own message. It makes no checkpoint due (the
    log) and is not counted between checkpoints (``audit verify``): each checkpoint is followed
    by its record, so counted, with ``checkpoint_every_entries: 1`` every record made the next
    checkpoint due, without end."""
    topic = fields.get("topic")
    return kind == "publish" and isinstance(topic, str) and topic.endswith(CHECKPOINT_TOPIC_SUFFIX)


@dataclass(frozen=True)
class Entry:
    index: int
    ts_ms: int
    kind: str
    data: dict[str, Any]
    line: bytes
    """The canonical bytes (no newline): the Merkle leaf's content."""


def _problem(kind: str, exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(data)"
    if err["type"] == "extra_forbidden":
        return f"{kind} entry: field {where!r} is not allowed (the schema has no room for it)"
    if err["type"] == "missing":
        return f"{kind} entry: required field {where!r} is missing"
    if err["type"] == "value_error":
        scope = "" if where == "(data)" else f" in {where!r}"
        return f"{kind} entry{scope}: {err['msg'].removeprefix('Value error, ')}"
    found = err.get("input")
    shown = "a list" if isinstance(found, list) else "a mapping" if isinstance(found, dict) else repr(found)
    return f"{kind} entry: field {where!r}: {err['msg']} (found {shown})"


def validate_data(kind: str, fields: Mapping[str, Any], *, legacy: bool = False) -> dict[str, Any]:
    """Check ``fields`` against the kind's schema; return the normalised data (the fields given).

    ``legacy`` accepts the forms older logs hold (reading); writing always uses the current one."""
    schema = SCHEMAS.get(kind)
    if schema is None:
        raise PayloadError(f"unknown audit entry kind {kind!r}; allowed: {', '.join(sorted(SCHEMAS))}")
    try:
        model = schema.model_validate(dict(fields), context={"legacy": legacy})
    except ValidationError as exc:
        raise PayloadError(_problem(kind, exc)) from exc
    return model.model_dump(mode="json", exclude_unset=True)


def new_salt() -> str:
    return secrets.token_hex(SALT_BYTES)


def encode_entry(
    index: int, ts_ms: int, kind: str, fields: Mapping[str, Any], *, legacy: bool = False,
    salt: str | None = None,
) -> Entry:
    """Validate and canonicalise one entry; ``salt`` (``new_salt``) is None only for a line
    read from a log written before entries had one."""
    data = validate_data(kind, fields, legacy=legacy)
    obj: dict[str, Any] = {"data": data, "i": index, "kind": kind, "ts": ts_ms}
    if salt is not None:
        obj["salt"] = salt
    line = bytes(rfc8785.dumps(obj))
    return Entry(index, ts_ms, kind, data, line)


def decode_entry(line: bytes) -> Entry:
    """Parse one stored line; it must be canonical and match its kind's schema."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, int limit
        raise PayloadError(f"not JSON: {str(exc)[:200]}") from exc
    if not isinstance(obj, dict) or set(obj) not in _KEYS:
        raise PayloadError(
            "an entry must be an object with exactly the keys data, i, kind, salt, ts (no salt in "
            "a log written before entries had one)"
        )
    index, ts, kind, data, salt = obj["i"], obj["ts"], obj["kind"], obj["data"], obj.get("salt")
    if "salt" in obj and not (isinstance(salt, str) and _SALT.fullmatch(salt)):
        raise PayloadError(
            f"entry field 'salt' must be {2 * SALT_BYTES} lower-case hex digits (found {str(salt)[:80]!r})"
        )
    for name, value in (("i", index), ("ts", ts)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SAFE:
            raise PayloadError(f"entry field {name!r} must be a non-negative integer (found {value!r})")
    if not isinstance(kind, str) or not isinstance(data, dict):
        raise PayloadError("entry 'kind' must be a string and 'data' an object")
    entry = encode_entry(index, ts, kind, data, legacy=True, salt=salt)
    if entry.line != line:
        raise PayloadError("entry is not in RFC 8785 canonical form (or has fields its schema drops)")
    return entry
