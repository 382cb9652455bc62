"""Follow faces across frames, in memory only, and smooth each face's emotion over its life.

Association is greedy: candidate (track, face) pairs are ranked by box overlap (IoU); pairs
below ``iou_threshold`` may still match when the centres are within ``max_centre_distance``
face widths (fast motion at a low frame rate). Each track keeps running sums only, so its
memory is constant; at most ``max_tracks`` live at once, and a track is forgotten
``forget_seconds`` after its face was last seen.

Smoothing: the track's emotion is the normalised geometric mean of every classified frame's
probabilities over the track's whole life (the mean of log-probabilities, then softmax). It
treats frames as independent experts: one blurred grimace cannot outvote a dozen calm frames,
and an emotion every frame agrees on keeps its weight.

Tracks have random ids (from the injected RNG, ``secrets`` by default) that are never
exported: what leaves this module is a ``TrackView`` whose ``handle`` is an opaque object
usable only as a dictionary key, and whose repr hides it.
"""

from __future__ import annotations

import math
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from agent.analytics.settings import TrackerConfig
from agent.clock import Clock
from agent.vision.observation import EMOTIONS, FaceObservation

FLOOR_P = 1e-6
LOG_FLOOR = math.log(FLOOR_P)
"""log(p) is clipped here, so one frame with p = 0 cannot veto a label forever."""


class IdSource(Protocol):
    def getrandbits(self, k: int, /) -> int: ...


class TrackHandle:
    """Opaque identity of one live track: hashable, comparable only by identity, prints nothing."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "TrackHandle(<hidden>)"


@dataclass(frozen=True, slots=True)
class TrackView:
    """What the tracker tells the windows about one face in one frame: no id, no box."""

    handle: TrackHandle = field(repr=False)
    frames: int
    """Frames this track has been seen in (life so far)."""
    confirmed: bool
    """Seen in at least ``min_frames`` frames: counts as a person."""
    emotion: str | None
    """Dominant smoothed emotion over the track's life; None if no frame was ever classified."""
    probs: tuple[tuple[str, float], ...] | None
    """Smoothed probabilities in EMOTIONS order; None if no frame was ever classified."""
    abstain_reason: str | None
    """Most frequent quality-gate reason when the track was never classified, else None."""


class _Track:
    """Running state of one face; constant memory whatever its length of life."""

    __slots__ = ("box", "frames", "handle", "last_seen", "log_sum", "n_classified", "reasons", "track_id")

    def __init__(self, track_id: int, box: tuple[float, float, float, float], t: float) -> None:
        self.track_id = track_id  # random; never leaves this module
        self.handle = TrackHandle()
        self.box = box
        self.last_seen = t
        self.frames = 0
        self.log_sum = [0.0] * len(EMOTIONS)
        self.n_classified = 0
        self.reasons: Counter[str] = Counter()

    def observe(self, obs: FaceObservation, t: float) -> None:
        self.box = obs.box
        self.last_seen = t
        self.frames += 1
        if obs.probs is None:
            self.reasons[obs.quality.abstain_reason or "unknown"] += 1
            return
        probs = dict(obs.probs)
        for i, label in enumerate(EMOTIONS):
            p = probs.get(label, 0.0)
            self.log_sum[i] += math.log(p) if p > FLOOR_P else LOG_FLOOR
        self.n_classified += 1

    def view(self, min_frames: int) -> TrackView:
        """Plain Python on 7 numbers: several times faster than numpy on arrays this small."""
        confirmed = self.frames >= min_frames
        if self.n_classified == 0:
            reason = self.reasons.most_common(1)[0][0] if self.reasons else "unknown"
            return TrackView(self.handle, self.frames, confirmed, None, None, reason)
        top = max(self.log_sum)
        weights = [math.exp((x - top) / self.n_classified) for x in self.log_sum]
        total = sum(weights)
        probs = tuple((e, w / total) for e, w in zip(EMOTIONS, weights, strict=True))
        emotion = EMOTIONS[weights.index(max(weights))]
        return TrackView(self.handle, self.frames, confirmed, emotion, probs, None)


def iou_matrix(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """IoU of every box in ``a`` (n, 4: x, y, w, h) with every box in ``b`` (m, 4)."""
    ax1, ay1 = a[:, 0:1], a[:, 1:2]
    ax2, ay2 = ax1 + a[:, 2:3], ay1 + a[:, 3:4]
    bx1, by1 = b[:, 0], b[:, 1]
    bx2, by2 = bx1 + b[:, 2], by1 + b[:, 3]
    iw = np.clip(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0, None)
    ih = np.clip(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0, None)
    inter = iw * ih
    union = a[:, 2:3] * a[:, 3:4] + b[:, 2] * b[:, 3] - inter
    out: npt.NDArray[np.float64] = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    return out


def centre_distance(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Centre distance of every pair, in widths of the ``a`` (track) box."""
    ac = a[:, 0:2] + a[:, 2:4] / 2
    bc = b[:, 0:2] + b[:, 2:4] / 2
    dist = np.linalg.norm(ac[:, None, :] - bc[None, :, :], axis=2)
    width = np.maximum(a[:, 2:3], 1e-6)
    out: npt.NDArray[np.float64] = dist / width
    return out


class Tracker:
    """Associates faces across frames and keeps a bounded set of live tracks."""

    def __init__(self, settings: TrackerConfig, clock: Clock, rng: IdSource | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self._rng: IdSource = rng if rng is not None else secrets.SystemRandom()
        self._tracks: dict[int, _Track] = {}
        self.evicted = 0
        """Tracks dropped because ``max_tracks`` was reached (a health figure, not an id)."""

    def __len__(self) -> int:
        return len(self._tracks)

    def update(self, observations: Sequence[FaceObservation], t: float) -> list[TrackView]:
        """Match this frame's faces to tracks (creating new ones); one view per observation, in order."""
        self._forget(t)
        tracks = list(self._tracks.values())
        pairs = self._match(tracks, observations)
        matched: dict[int, _Track] = {j: tracks[i] for i, j in pairs}
        views = []
        for j, obs in enumerate(observations):
            track = matched.get(j)
            if track is None:
                track = self._new_track(obs, t)
            track.observe(obs, t)
            views.append(track.view(self.settings.min_frames))
        return views

    def _forget(self, t: float) -> None:
        horizon = t - self.settings.forget_seconds
        for key in [k for k, tr in self._tracks.items() if tr.last_seen < horizon]:
            del self._tracks[key]

    def _new_track(self, obs: FaceObservation, t: float) -> _Track:
        if len(self._tracks) >= self.settings.max_tracks:
            oldest = min(self._tracks, key=lambda k: self._tracks[k].last_seen)
            del self._tracks[oldest]
            self.evicted += 1
        track_id = self._rng.getrandbits(64)
        while track_id in self._tracks:
            track_id = self._rng.getrandbits(64)
        track = _Track(track_id, obs.box, t)
        self._tracks[track_id] = track
        return track

    def _match(self, tracks: list[_Track], observations: Sequence[FaceObservation]) -> list[tuple[int, int]]:
        """Greedy one-to-one matching: best IoU first, then nearest centre within the limit."""
        if not tracks or not observations:
            return []
        a = np.array([tr.box for tr in tracks], dtype=np.float64)
        b = np.array([o.box for o in observations], dtype=np.float64)
        iou = iou_matrix(a, b)
        dist = centre_distance(a, b)
        s = self.settings
        # IoU matches rank first (score 1 + IoU), then centre matches by closeness (score < 1).
        score = np.where(
            iou >= s.iou_threshold,
            1.0 + iou,
            np.where(dist <= s.max_centre_distance, 1.0 / (1.0 + dist), 0.0),
        )
        pairs: list[tuple[int, int]] = []
        used_t: set[int] = set()
        used_o: set[int] = set()
        for flat in np.argsort(-score, axis=None, kind="stable"):
            i, j = divmod(int(flat), score.shape[1])
            if score[i, j] <= 0:
                break
            if i in used_t or j in used_o:
                continue
            pairs.append((i, j))
            used_t.add(i)
            used_o.add(j)
        return pairs
