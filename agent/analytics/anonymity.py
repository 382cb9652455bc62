"""From tracks to the cells a window may publish: the fewest people the tracks could be, noise, k.

Every track that counts (confirmed, not static) belongs to one cell: the vote of its dominant
smoothed emotion, or, if it was never classified, the abstention reason seen most often. A
cell's count is not its number of tracks but the fewest people who could have made them: two
tracks that were never seen in the same frame could be one person who was lost and found
again, so a cell counts the largest group of its tracks that were all seen together, pair by
pair (``CoObserved``). One person's tracks are never seen in one frame together (one box per
face per frame), so no such group holds two of them: adding or removing one person changes
each cell by at most 1, and only cells that person's tracks fell in: the bound
docs/analytics.md builds the k and differential-privacy arguments on.

k-anonymity applies to the *voters* (people with an emotion vote), not to everyone seen: the
shares describe the voters, so five people of whom four abstained must not publish one
person's emotion as "100 %". With noise on, k is compared to the noisy number of voters.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from agent.analytics.dp import NoiseSource
from agent.analytics.max_clique import clique_number
from agent.analytics.tracker import TrackHandle, TrackView
from agent.emotions import EMOTIONS

ABSTAIN_REASONS: tuple[str, ...] = ("too_small", "blurred", "too_dark", "too_bright", "turned", "other")
"""Quality-gate reasons published per window; anything else is counted as ``other``."""

CIRCUMPLEX_DEGREES: dict[str, float | None] = {
    "happy": 8.0,  # Russell 1980: "happy" 7.8°
    "surprise": 70.0,  # "astonished" 69.8°
    "angry": 99.0,  # "angry" 99.0°
    "fear": 117.0,  # "afraid" 116.8°
    "disgust": 135.0,  # not among Russell's 28 words: placed on his "distress" axis (135°)
    "sad": 208.0,  # "sad" 207.5°
    "neutral": None,  # the centre of the circle: valence 0, arousal 0
}
"""Angle of each label on Russell's (1980) circumplex, 0° = pleasure, 90° = arousal."""


def _circumplex_milli() -> dict[str, tuple[int, int]]:
    out = {}
    for label, deg in CIRCUMPLEX_DEGREES.items():
        if deg is None:
            out[label] = (0, 0)
        else:
            rad = math.radians(deg)
            out[label] = (round(1000 * math.cos(rad)), round(1000 * math.sin(rad)))
    return out


VALENCE_AROUSAL_MILLI: dict[str, tuple[int, int]] = _circumplex_milli()
"""(valence, arousal) × 1000 per label, on the unit circle (neutral at the origin)."""


@dataclass(frozen=True, slots=True)
class Cells:
    """Per-window counts of people: votes per emotion and abstentions per reason."""

    votes: dict[str, int]
    abstained: dict[str, int]

    @property
    def voters(self) -> int:
        return sum(self.votes.values())

    @property
    def people(self) -> int:
        return self.voters + sum(self.abstained.values())


def cell_of(view: TrackView) -> str:
    """The vote of a track, or ``abstained:<reason>`` for a track never classified."""
    if view.emotion is not None:
        return view.emotion
    reason = view.abstain_reason if view.abstain_reason in ABSTAIN_REASONS else "other"
    return f"abstained:{reason}"


Together = Mapping[TrackHandle, AbstractSet[TrackHandle]]
"""For each track, the tracks seen in the same frame as it at least once (``CoObserved``)."""


class CoObserved:
    """Which tracks were ever seen in one frame together: such tracks are different people (one
    box per face per frame), while two never seen together may be one person.

    Counting by spans (tracks whose [first, last] seen overlap), as before, assumed one person's
    tracks never overlap; but a track lost for a while keeps a wide gate and can take its person
    back from the newer track that had started meanwhile, so one person pacing at walking speed
    made interleaved tracks and counted as two to four (found by review)."""

    def __init__(self) -> None:
        self._with: dict[TrackHandle, set[TrackHandle]] = {}

    def frame(self, handles: Iterable[TrackHandle]) -> None:
        """One frame's tracks (a duplicate box shares its face's track: counted once)."""
        seen = set(handles)
        for h in seen:
            self._with.setdefault(h, set()).update(seen - {h})

    def keep(self, handles: AbstractSet[TrackHandle]) -> None:
        """Forget every track not in ``handles`` (the ones a window may still compare)."""
        self._with = {h: others & handles for h, others in self._with.items() if h in handles}

    @property
    def together(self) -> Together:
        return self._with


def largest_group(handles: AbstractSet[TrackHandle], together: Together) -> int:
    """The most of ``handles`` that were all seen together pairwise: that many are certainly
    different people, and one person adds at most one track to such a group (a maximum clique,
    found exactly whatever the number of tracks: ``max_clique``)."""
    asked = set(handles)
    graph = {h: asked.intersection(together.get(h, ())) for h in asked}
    for h, others in graph.items():
        others.discard(h)  # never from ``CoObserved``; a loop would never end the search
    return clique_number(graph)


def fewest_people(views: Iterable[TrackView], together: Together) -> int:
    """The fewest people who could have made these tracks: the largest group of them seen
    together pairwise (``together``: a window's ``CoObserved``)."""
    return largest_group({view.handle for view in views}, together)


def tally(views: Iterable[TrackView], together: Together) -> Cells:
    """Per cell, the fewest people who could have made its counting tracks (confirmed, not static)."""
    by_cell: dict[str, list[TrackView]] = {}
    for view in views:
        if view.counts:
            by_cell.setdefault(cell_of(view), []).append(view)
    votes = {e: fewest_people(by_cell.get(e, ()), together) for e in EMOTIONS}
    abstained = {r: fewest_people(by_cell.get(f"abstained:{r}", ()), together) for r in ABSTAIN_REASONS}
    return Cells(votes, abstained)


def add_noise(cells: Cells, noise: NoiseSource, epsilon: float) -> Cells:
    """Noise every cell (zeros too, or their absence would show); negative results become 0."""
    votes = {k: max(0, v + noise.sample(epsilon)) for k, v in cells.votes.items()}
    abstained = {k: max(0, v + noise.sample(epsilon)) for k, v in cells.abstained.items()}
    return Cells(votes, abstained)


def shares_per_mille(counts: Mapping[str, int]) -> dict[str, int]:
    """Shares in per-mille that sum to exactly 1000 (largest remainder); all 0 when empty."""
    total = sum(counts.values())
    if total <= 0:
        return dict.fromkeys(counts, 0)
    floors = {k: v * 1000 // total for k, v in counts.items()}
    left = 1000 - sum(floors.values())
    order = sorted(counts, key=lambda k: (-(counts[k] * 1000 % total), list(counts).index(k)))
    for k in order[:left]:
        floors[k] += 1
    return floors


def mean_valence_arousal(votes: Mapping[str, int]) -> tuple[int, int] | None:
    """Mean (valence, arousal) × 1000 of the voters, each mapped on the circumplex."""
    total = sum(votes.values())
    if total <= 0:
        return None
    val = sum(n * VALENCE_AROUSAL_MILLI[k][0] for k, n in votes.items())
    aro = sum(n * VALENCE_AROUSAL_MILLI[k][1] for k, n in votes.items())
    return _div_round(val, total), _div_round(aro, total)


def _div_round(num: int, den: int) -> int:
    """Integer division rounding half away from zero (symmetric for negative valence)."""
    q, r = divmod(abs(num), den)
    if 2 * r >= den:
        q += 1
    return q if num >= 0 else -q
