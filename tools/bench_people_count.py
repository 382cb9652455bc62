"""How long counting people takes: ``largest_group`` on crowds the tracker makes and on built graphs.

    .venv/bin/python tools/bench_people_count.py [--dense N ...]

Crowds: people walking at random in a 60 s window, some of them missed by the detector each
frame, at most ``keep`` faces per frame (``vision.max_faces``), tracked by the real ``Tracker``
(defaults): the count once over every counting track, and a ``WindowAggregator``'s whole close
of that window (which counts every cell, all voters and the differencing rule's tracks). With
100 faces a frame, more than ``tracker.max_tracks`` (64), the table churns: thousands of tracks. Built
graphs: 60 tracks in 20 triples, each seen with every track outside its triple (the most maximal
groups a graph of 60 can have), and random graphs where 90 % of track pairs were seen together
(``--dense``: their numbers of tracks, 64 by default). Prints the tracks, the share of pairs seen
together, the count and the time it took (docs/analytics.md).
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from agent.analytics.anonymity import CoObserved, largest_group
from agent.analytics.settings import AnalyticsConfig, TrackerConfig
from agent.analytics.tracker import Tracker, TrackHandle
from agent.analytics.windows import FrameCounters, WindowAggregator
from agent.clock import FakeClock
from agent.emotions import EMOTIONS
from agent.vision.observation import FaceObservation, Quality

T0 = 1_700_000_040.0
FACE = 0.04
QUALITY = Quality(face_px=80, sharpness=100, brightness=120, yaw_degrees=0)
PROBS = tuple((e, 0.7 if e == "happy" else 0.05) for e in EMOTIONS)


@dataclass(frozen=True)
class Crowd:
    """People walking at up to ``speed`` frame widths per second, each missed with ``miss``."""

    people: int
    keep: int
    miss: float
    speed: float
    fps: float

    @property
    def name(self) -> str:
        return f"crowd {self.people}, {self.keep}/frame, {self.miss:.0%} missed, {self.speed}/s"


def crowd(scene: Crowd, seed: int) -> tuple[set[TrackHandle], CoObserved, float]:
    """One 60 s window of ``scene``: its counting tracks, which were seen together, and how
    long a ``WindowAggregator`` fed the same frames took to close the window (ms)."""
    people, keep, miss, speed, fps = scene.people, scene.keep, scene.miss, scene.speed, scene.fps
    rng = random.Random(seed)  # noqa: S311 - a reproducible scene, not a secret
    clock = FakeClock()
    tracker = Tracker(TrackerConfig(), clock, rng=random.Random(seed))  # noqa: S311
    windows = WindowAggregator(AnalyticsConfig(), clock)
    walkers = [[rng.random() * 0.9, rng.random() * 0.9, rng.uniform(-speed, speed),
                rng.uniform(-speed, speed)] for _ in range(people)]
    seen, counting = CoObserved(), set()
    for i in range(int(60 * fps)):
        for w in walkers:
            for axis in (0, 1):
                w[axis] += w[axis + 2] / fps
                if not 0.0 <= w[axis] <= 0.95:
                    w[axis + 2] = -w[axis + 2]
                    w[axis] = min(max(w[axis], 0.0), 0.95)
        visible = [w for w in walkers if rng.random() > miss]
        rng.shuffle(visible)
        faces = [FaceObservation(box=(w[0], w[1], FACE, FACE), score=0.9, keypoints=(), quality=QUALITY,
                                 probs=PROBS) for w in visible[:keep]]
        views = tracker.update(faces, T0 + i / fps)
        windows.add_frame(T0 + i / fps, views, FrameCounters(captured=1, analysed=1))
        seen.frame(v.handle for v in views)
        counting |= {v.handle for v in views if v.counts}
    start = time.perf_counter()
    windows.poll(T0 + 60)
    return counting, seen, 1000 * (time.perf_counter() - start)


def triples(n: int) -> tuple[set[TrackHandle], CoObserved]:
    tracks = [TrackHandle() for _ in range(n)]
    seen = CoObserved()
    for i, a in enumerate(tracks):
        for j in range(i + 1, n):
            if i // 3 != j // 3:
                seen.frame([a, tracks[j]])
    return set(tracks), seen


def dense(n: int, share: float, seed: int) -> tuple[set[TrackHandle], CoObserved]:
    rng = random.Random(seed)  # noqa: S311
    tracks = [TrackHandle() for _ in range(n)]
    seen = CoObserved()
    for i, a in enumerate(tracks):
        for b in tracks[i + 1:]:
            if rng.random() < share:
                seen.frame([a, b])
    return set(tracks), seen


def report(name: str, tracks: set[TrackHandle], seen: CoObserved, close_ms: float | None = None) -> None:
    together = seen.together
    pairs = sum(len(together.get(h, set()) & tracks) for h in tracks) // 2
    n = len(tracks)
    start = time.perf_counter()
    count = largest_group(tracks, together)
    ms = 1000 * (time.perf_counter() - start)
    close = "" if close_ms is None else f"  window close {close_ms:7.1f} ms"
    print(f"{name:<44} tracks {n:>4}  pairs seen together {pairs / max(1, n * (n - 1) // 2):4.0%}"
          f"  count {count:>3}  {ms:9.1f} ms{close}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dense", type=int, nargs="*", default=[64], help="their numbers of tracks")
    args = parser.parse_args(argv)
    for scene in (Crowd(30, 20, 0.2, 0.05, 10), Crowd(80, 20, 0.3, 0.05, 10),
                  Crowd(150, 20, 0.5, 0.3, 10), Crowd(100, 100, 0.7, 0.8, 5), Crowd(120, 100, 0.0, 0.1, 5)):
        report(scene.name, *crowd(scene, seed=scene.people))
    report("60 tracks in 20 triples", *triples(60))
    for n in args.dense:
        report(f"random, {n} tracks, 90 % of pairs", *dense(n, 0.9, seed=n))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
