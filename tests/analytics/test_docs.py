"""docs/analytics.md stays true: its example body and circumplex table match the code."""

from __future__ import annotations

import json
import re
from pathlib import Path

from agent.analytics.anonymity import VALENCE_AROUSAL_MILLI, mean_valence_arousal, shares_per_mille
from agent.analytics.windows import WindowReport

DOC = Path(__file__).resolve().parents[2] / "docs" / "analytics.md"


def test_example_body_is_consistent_with_the_code() -> None:
    block = re.search(r"```json\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert block is not None
    body = json.loads(block.group(1))
    assert body["shares_pm"] == shares_per_mille(body["votes"])
    assert (body["valence_milli"], body["arousal_milli"]) == mean_valence_arousal(body["votes"])
    assert body["people"] == sum(body["votes"].values()) + sum(body["abstained"].values())
    fields = set(WindowReport.__dataclass_fields__)
    flat = {
        "frames_captured",
        "frames_analysed",
        "frames_dropped",
        "lifetime_count",
        "lifetime_max_ms",
        "lifetime_p99_ms",
    }
    # Written to the local audit log only: the queue's state at a window's close follows how long
    # inference took, which grows with the number of faces, so it is never published.
    local = {"frames_discarded", "frames_queued", "epsilon_spent_micro"}
    health = {"load"}  # summed by the health topic, over windows that show their frames
    local |= health
    assert set(body) == (fields - flat - local) | {"frames", "lifetime_ms"}


def test_circumplex_table_matches_the_mapping() -> None:
    rows = re.findall(r"^\s*\| (\w+) .*\|\s+(−?\d+) \|\s+(−?\d+) \|$", DOC.read_text(encoding="utf-8"), re.M)
    table = {label: (int(v.replace("−", "-")), int(a.replace("−", "-"))) for label, v, a in rows}
    assert table == VALENCE_AROUSAL_MILLI
