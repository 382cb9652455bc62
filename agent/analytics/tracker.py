"""Follow faces across frames, in memory only, and smooth each face's emotion over its life.

Association (``agent.analytics.motion``): each live track predicts where its face is now from a
constant-velocity model, and accepts faces within a gate of ``max_centre_distance`` face widths
plus ``max_speed`` widths per second since it was last seen (a face missed for a few frames is
looked for farther away); a face whose box overlaps the prediction by ``iou_threshold`` is
accepted too. Pairs are taken greedily, closest (in gate units) first, one-to-one; a face left
over starts a new track. At most ``max_tracks`` live at once, and a track is forgotten
``forget_seconds`` after its face was last seen.

Confirmation, as Frigate separates ``min_score`` from ``threshold``: a track counts as a person
once seen in ``min_frames`` frames *and* the median of its detection scores reaches
``threshold``; it then stays confirmed. A track counts only once its face has moved beyond
``still_tolerance`` face widths, and stops counting once it stays within that for
``static_seconds``: a poster or a screen never counts.

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

from agent.analytics.motion import Motion, Stillness, grid_cell
from agent.analytics.settings import TrackerConfig
from agent.clock import Clock
from agent.emotions import EMOTIONS
from agent.vision.observation import FaceObservation

FLOOR_P = 1e-6
LOG_FLOOR = math.log(FLOOR_P)
"""log(p) is clipped here, so one frame with p = 0 cannot veto a label forever."""
SCORE_STEPS = 100
"""Detection scores are kept as a histogram of hundredths: an exact median, constant memory."""
REPORTED_STILL_S = 600.0
"""How long a face must stay still before health names its cell (``static_faces``). A poster or
a screen stays put for hours; after ``static_seconds`` (10 s) a person who sat still was named,
which told that someone had been there, and where, in an hour whose windows were all suppressed
(found by a privacy review). The face stops counting after ``static_seconds`` all the same."""


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
    """Seen in ``min_frames`` frames with a median detection score of at least ``threshold``."""
    emotion: str | None
    """Dominant smoothed emotion over the track's life; None if no frame was ever classified."""
    probs: tuple[tuple[str, float], ...] | None
    """Smoothed probabilities in EMOTIONS order; None if no frame was ever classified."""
    abstain_reason: str | None
    """Most frequent quality-gate reason when the track was never classified, else None."""
    static: bool = False
    """Not seen to move beyond ``still_tolerance`` yet, or not for ``static_seconds``: it may be a
    poster or a screen, and it does not count."""

    @property
    def counts(self) -> bool:
        """Counts toward k, the people and the votes: confirmed and not static."""
        return self.confirmed and not self.static


class _Track:
    """Running state of one face; constant memory whatever its length of life."""

    __slots__ = (
        "confirmed",
        "frames",
        "handle",
        "log_sum",
        "motion",
        "n_classified",
        "reasons",
        "scores",
        "still",
        "track_id",
    )

    def __init__(self, track_id: int, box: tuple[float, float, float, float], t: float) -> None:
        self.track_id = track_id  # random; never leaves this module
        self.handle = TrackHandle()
        self.motion = Motion.start(box, t)
        self.still = Stillness.start(box, t)
        self.frames = 0
        self.confirmed = False
        self.scores: Counter[int] = Counter()
        self.log_sum = [0.0] * len(EMOTIONS)
        self.n_classified = 0
        self.reasons: Counter[str] = Counter()

    @property
    def last_seen(self) -> float:
        return self.motion.seen_at

    def observe(self, obs: FaceObservation, t: float, s: TrackerConfig) -> None:
        if self.frames:
            self.motion.update(obs.box, t)
        self.still.update(obs.box, t, self.motion.width, s.still_tolerance)
        self.frames += 1
        self.scores[min(max(round(obs.score * SCORE_STEPS), 0), SCORE_STEPS)] += 1
        if not self.confirmed and self.frames >= s.min_frames:
            self.confirmed = self.median_score() >= s.threshold
        if obs.probs is None:
            self.reasons[obs.quality.abstain_reason or "unknown"] += 1
            return
        probs = dict(obs.probs)
        for i, label in enumerate(EMOTIONS):
            p = probs.get(label, 0.0)
            self.log_sum[i] += math.log(p) if p > FLOOR_P else LOG_FLOOR
        self.n_classified += 1

    def median_score(self) -> float:
        """Lower median of the detection scores seen, to the hundredth."""
        rank, seen = (self.frames + 1) // 2, 0
        for step in sorted(self.scores):
            seen += self.scores[step]
            if seen >= rank:
                return step / SCORE_STEPS
        return 0.0  # pragma: no cover - frames >= 1 always reaches a step

    def is_static(self, static_seconds: float) -> bool:
        """Has been still for ``static_seconds`` (reported to the installer)."""
        return self.still.still_for(self.last_seen) >= static_seconds

    def view(self, s: TrackerConfig) -> TrackView:
        """Plain Python on 7 numbers: several times faster than numpy on arrays this small."""
        static = not self.still.moved or self.is_static(s.static_seconds)
        if self.n_classified == 0:
            reason = self.reasons.most_common(1)[0][0] if self.reasons else "unknown"
            return TrackView(self.handle, self.frames, self.confirmed, None, None, reason, static)
        top = max(self.log_sum)
        weights = [math.exp((x - top) / self.n_classified) for x in self.log_sum]
        total = sum(weights)
        probs = tuple((e, w / total) for e, w in zip(EMOTIONS, weights, strict=True))
        emotion = EMOTIONS[weights.index(max(weights))]
        return TrackView(self.handle, self.frames, self.confirmed, emotion, probs, None, static)


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
        """Match this frame's faces to tracks (creating new ones); one view per observation, in order.

        A box that duplicates a better one (a face cut in two by an occluder, a double detection)
        feeds no track and gets the view of the face it duplicates: one face, one track."""
        self._forget(t)
        duplicate_of = duplicates(observations)
        faces = [j for j in range(len(observations)) if j not in duplicate_of]
        tracks = list(self._tracks.values())
        pairs = self._match(tracks, [observations[j] for j in faces], t)
        matched: dict[int, _Track] = {faces[j]: tracks[i] for i, j in pairs}
        views: dict[int, TrackView] = {}
        for j in faces:
            track = matched.get(j)
            if track is None:
                track = self._new_track(observations[j], t)
            track.observe(observations[j], t, self.settings)
            views[j] = track.view(self.settings)
        return [views[duplicate_of.get(j, j)] for j in range(len(observations))]

    def static_cells(self, seen_at: float | None = None) -> list[str]:
        """Grid cells (``A1`` top left) of live faces that have stayed still for
        ``REPORTED_STILL_S`` (or ``static_seconds``, if longer); with ``seen_at``, only of
        those seen at that time (in the frame just given to ``update``): a track outlives its
        face by ``forget_seconds``, and would name the cell of a face already gone in the
        figures of the next window (found by review).

        For the installer: a privacy zone drawn there stops a poster or a screen being analysed.
        """
        s = self.settings
        still = max(s.static_seconds, REPORTED_STILL_S)
        cells = {
            grid_cell(tr.motion.cx, tr.motion.cy, s.grid)
            for tr in self._tracks.values()
            if tr.is_static(still) and (seen_at is None or tr.last_seen >= seen_at)
        }
        return sorted(cells)

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

    def _match(
        self, tracks: list[_Track], observations: Sequence[FaceObservation], t: float
    ) -> list[tuple[int, int]]:
        """Greedy one-to-one matching on the distance to each track's prediction, in gate units.

        A cost below 1 is inside the gate; a predicted box overlapping the face by
        ``iou_threshold`` is accepted as well (cost 1).
        """
        if not tracks or not observations:
            return []
        s = self.settings
        boxes = np.array([o.box for o in observations], dtype=np.float64)
        predicted = np.array([_predicted_box(tr.motion, t) for tr in tracks], dtype=np.float64)
        gates = np.array([[tr.motion.gate(t, s.max_centre_distance, s.max_speed)] for tr in tracks])
        p_centre = predicted[:, None, 0:2] + predicted[:, None, 2:4] / 2
        o_centre = boxes[None, :, 0:2] + boxes[None, :, 2:4] / 2
        widths = predicted[:, 2:3]
        dist = np.linalg.norm(o_centre - p_centre, axis=2) / widths
        with np.errstate(divide="ignore", invalid="ignore"):
            cost = np.where(gates > 0, dist / gates, np.inf)
        cost = np.where(iou_matrix(predicted, boxes) >= s.iou_threshold, np.minimum(cost, 1.0), cost)
        cost = np.where(cost <= 1.0, cost, np.inf)
        pairs: list[tuple[int, int]] = []
        used_t: set[int] = set()
        used_o: set[int] = set()
        for flat in np.argsort(cost, axis=None, kind="stable"):
            i, j = divmod(int(flat), cost.shape[1])
            if not math.isfinite(cost[i, j]):
                break
            if i in used_t or j in used_o:
                continue
            pairs.append((i, j))
            used_t.add(i)
            used_o.add(j)
        return pairs


def duplicates(observations: Sequence[FaceObservation], overlap: float = 0.3) -> dict[int, int]:
    """Index of each box that duplicates a higher-scored one -> index of that one.

    A duplicate overlaps it by ``overlap`` (IoU) or has its centre inside it."""
    if len(observations) < 2:
        return {}
    boxes = np.array([o.box for o in observations], dtype=np.float64)
    iou = iou_matrix(boxes, boxes)
    centres = boxes[:, 0:2] + boxes[:, 2:4] / 2
    found: dict[int, int] = {}
    kept: list[int] = []
    for j in sorted(range(len(observations)), key=lambda k: -observations[k].score):
        for p in kept:
            x, y, w, h = boxes[p]
            inside = x <= centres[j, 0] <= x + w and y <= centres[j, 1] <= y + h
            if iou[j, p] >= overlap or inside:
                found[j] = p
                break
        else:
            kept.append(j)
    return found


def _predicted_box(m: Motion, t: float) -> tuple[float, float, float, float]:
    px, py = m.predict(t)
    return px - m.width / 2, py - m.height / 2, m.width, m.height
