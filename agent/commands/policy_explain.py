"""Plain-language description of what a configured device does: for signage, a DPIA, a person.

Every sentence is derived from the config and the policy decision, so the text cannot drift
from what the device actually enforces. ``emotion-agent policy explain -c CONFIG`` prints it.
It reads the whole config (camera, vision, analytics, MQTT, retention, policy), so it lives
with the command rather than in ``agent/privacy``, below the config that assembles them.
"""

from __future__ import annotations

import textwrap

from agent.config import AgentConfig
from agent.emotions import EMOTIONS
from agent.privacy.policy import PolicyDecision, in_eu
from agent.privacy.schedule import describe as describe_schedule


def render(cfg: AgentConfig, decision: PolicyDecision) -> str:
    """The full explanation, sections separated by blank lines."""
    parts = [
        _header(cfg, decision),
        _does(cfg),
        _does_not(cfg),
        _leaves(cfg),
        _kept(cfg),
        _rules(decision),
        _contacts(cfg),
    ]
    return "\n\n".join(_wrap(part) for part in parts) + "\n"


def _wrap(block: str, width: int = 96) -> str:
    """Wrap long bullet lines for a notice or a terminal, indenting continuations."""
    out = []
    for line in block.splitlines():
        indent = " " * (len(line) - len(line.lstrip(" -")))
        out.append(textwrap.fill(line, width, subsequent_indent=indent or "  ", break_on_hyphens=False,
                                 break_long_words=False))
    return "\n".join(out)


def _header(cfg: AgentConfig, decision: PolicyDecision) -> str:
    s = cfg.site
    law = "EU rules apply" if in_eu(s.jurisdiction) else f"rules for {s.jurisdiction} apply"
    verdict = "ALLOWED: emotion inference may run" if decision.allowed else (
        "REFUSED: this device will not run emotion inference with these settings")
    return (f"Emotion statistics device {cfg.device_id}\n"
            f"Site: jurisdiction {s.jurisdiction} ({law}); context {s.context}; purpose {s.purpose}.\n"
            f"Decision: {verdict}.")


def _does(cfg: AgentConfig) -> str:
    p = cfg.policy
    lines = ["What this device does:",
             f"- Looks at the camera view up to {cfg.camera.fps:g} times per second and estimates "
             f"the facial expression of each visible face ({', '.join(EMOTIONS)})."]
    if p.schedule is None:
        lines.append("- It runs at all hours (no schedule is set).")
    else:
        lines.append(f"- It runs only during these hours ({p.schedule.timezone} time); outside them "
                     "the camera is switched off:")
        lines.extend(f"    {line}" for line in describe_schedule(p.schedule))
    lines.append("- Each image is held in memory only while it is analysed (milliseconds), then "
                 "overwritten with zeros. Images have no retention setting: their retention is zero "
                 "and cannot be changed.")
    if p.zones:
        names = ", ".join(z.name for z in p.zones)
        lines.append(f"- {len(p.zones)} privacy zone(s) ({names}) are blacked out before any "
                     "analysis: nothing inside them is ever looked at.")
    if p.min_face_height > 0:
        lines.append(f"- Faces smaller than {_percent(p.min_face_height)} of the picture height "
                     "(people far away) are ignored.")
    lines.append(f"- At most {cfg.vision.max_faces} faces are analysed in one picture.")
    return "\n".join(lines)


def _percent(fraction: float) -> str:
    """A fraction as the percentage it is (0.015 -> 1.5%), not rounded to a whole percent."""
    text = repr(round(fraction * 100, 10))  # 0.07 * 100 is 7.000000000000001
    return f"{text.removesuffix('.0')}%"


def _does_not(cfg: AgentConfig) -> str:
    pm = cfg.policy.privacy_mode
    switches = [w for w, on in (("a switch over MQTT", pm.mqtt), ("a signal (SIGUSR1)", pm.sigusr1),
                                (f"a flag file ({pm.flag_file})", pm.flag_file is not None)) if on]
    lines = ["What this device does not do:",
             "- It does not record, store or send images, video, face crops or face templates.",
             "- It does not identify anyone, recognise faces or follow people between visits; "
             "short-lived tracking numbers exist only in memory and are never sent.",
             "- It never infers identity, age, sex, ethnicity, health or beliefs."]
    if switches:
        lines.append(f"- Privacy mode, turned on by {' or '.join(switches)}, switches the camera off "
                     "until it is turned off again.")
    return "\n".join(lines)


def _leaves(cfg: AgentConfig) -> str:
    a, t = cfg.analytics, cfg.analytics.tracker
    k = a.min_people
    lines = ["Which data leaves the device:",
             f"- Every {a.window_seconds} seconds, anonymous totals: how many people were seen and the "
             f"share of each expression, only when at least {k} different people with an expression "
             f"were counted (k = {k}). People are counted as the fewest different people the faces "
             "could belong to: faces never seen at the same moment may be one person, and count once.",
             f"- A face counts only after {t.min_frames} pictures with a median detection confidence of "
             f"at least {t.threshold:g}, and only once it has moved: a face that stays still (a poster, "
             f"a photo, a screen) never counts, and one that has moved stops counting after "
             f"{t.static_seconds:g} seconds still.",
             "- " + _small_window(cfg)]
    lines.append("- " + _differencing(cfg))
    if a.dp.enabled:
        lines.append(f"- Differential privacy is on: random noise (epsilon {a.dp.epsilon_per_window:g} "
                     f"per period, at most {a.dp.daily_budget:g} per UTC day) is added to the counts; "
                     "when the daily budget is spent, no breakdown is sent until 00:00 UTC.")
    else:
        lines.append("- Differential privacy (random noise on counts) is off.")
    shown = ("never sent, since exact figures would undo the random noise (the totals stay at 0)"
             if a.dp.enabled else
             "taken only from the periods whose statistics were sent (never from those withheld "
             "for having too few people): with none, the totals stay as they were and the rest is empty")
    lines.append("- With each period, device health: camera state, uptime, frames captured, delivery "
                 "backlog. Figures that change with the number of faces (processing time, frame rate, "
                 "dropped frames, gating counters, temperature, where still faces are) are sent only "
                 f"once every {a.health_period_seconds} seconds, for the {a.health_period_seconds} "
                 f"seconds before; they are {shown}.")
    lines.extend(_destinations(cfg))
    return "\n".join(lines)


def _small_window(cfg: AgentConfig) -> str:
    if cfg.analytics.small_window == "suppress":
        return ("With fewer people, nothing about people is sent for that period: no number of "
                "people, no expressions and no frame figures, only that it had fewer than k.")
    return ("With fewer people, no number of people and no expressions are sent for that period; "
            "its people are carried into the next period and sent with it once k is reached.")


def _differencing(cfg: AgentConfig) -> str:
    a = cfg.analytics
    if a.dp.enabled:
        return ("Periods are not compared with each other before sending: the random noise below "
                "protects against subtracting one period from another.")
    if a.differencing == "withhold":
        return (f"A period whose people differ from the last period sent by fewer than {a.min_people} "
                "people (someone came or left) is not sent: subtracting the two would single them out.")
    if a.differencing == "merge":
        return (f"A period whose people differ from the last period sent by fewer than {a.min_people} "
                "people is not sent on its own: it is carried into the next period.")
    return ("Periods are sent even when only a few people came or left since the last one "
            "(analytics.differencing: off): subtracting two periods can single them out.")


def _destinations(cfg: AgentConfig) -> list[str]:
    lines = []
    if cfg.mqtt.enabled:
        lines.append(f"- Everything is signed by the device and sent to the message broker at "
                     f"{cfg.mqtt.host}:{cfg.mqtt.port}, together with alerts computed from those "
                     "totals, device health and signed summaries of the audit log.")
    if cfg.outputs.jsonl is not None:
        where = "standard output" if cfg.outputs.jsonl == "-" else f"the file {cfg.outputs.jsonl}"
        lines.append(f"- The same signed messages are written as JSON lines to {where}.")
    if not lines:
        lines.append("- Publishing is switched off: nothing leaves the device; each period is "
                     "recorded in the local audit log only.")
    return lines


def _kept(cfg: AgentConfig) -> str:
    r = cfg.retention
    return "\n".join([
        "How long anything is kept:",
        "- Images: not kept (zeroed as soon as they are analysed).",
        f"- Messages not yet delivered to the broker: deleted once {r.spool_days} days old.",
        f"- The audit log (what happened to images, what was sent; no images): in files of at most "
        f"one UTC day, each deleted once its newest entry is {r.audit_days} days old, so an entry "
        f"is kept {r.audit_days} to {r.audit_days + 1} days.",
        f"- Local statistics (totals per period, used for alert baselines): a UTC day's totals are "
        f"deleted {r.stats_days} days after that day ends.",
        f"- Old audit files and statistics are deleted at start and every {r.interval_minutes} "
        "minutes, undelivered messages with every new message and every minute: data outlives its "
        "limit by at most that long. Deleted audit log segments and undelivered messages are "
        "recorded in the audit log; deleted local statistics are not recorded there.",
    ])


def _rules(decision: PolicyDecision) -> str:
    lines = ["Rules applied:"]
    lines.extend(f"- REFUSED by {f.rule} ({f.source}): {f.message}" for f in decision.refusals)
    lines.extend(f"- {f.rule} ({f.source}): {f.message}" for f in decision.notes)
    return "\n".join(lines)


def _contacts(cfg: AgentConfig) -> str:
    s = cfg.site
    sign = s.signage
    lines = ["Responsible and notices:",
             f"- Controller: {sign.controller if sign else 'not configured (site.signage.controller)'}",
             f"- Full notice: {sign.notice_url if sign else 'not configured (site.signage.notice_url)'}"]
    if sign:
        lines.append(f"- Signage at the camera confirmed on {sign.confirmed.isoformat()}.")
    if s.retention_policy_url:
        lines.append(f"- Retention schedule: {s.retention_policy_url}")
    if s.justification_ref:
        lines.append(f"- Justification: {s.justification_ref}")
    return "\n".join(lines)
