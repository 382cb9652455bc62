"""``/metrics`` (Prometheus text format), ``/healthz`` and a read-only fleet page (no JavaScript).

The page and metrics read the shared database, so any replica shows the whole fleet; the
per-replica counters (verified, rejected, lag) are this replica's own, labelled with its id.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agent.fleet.receiver import Metrics
from agent.fleet.store import Store

logger = logging.getLogger(__name__)


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_metrics(receiver_id: str, metrics: Metrics, store: Store) -> str:
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    rid = _label(receiver_id)
    with metrics.lock:
        counters = (
            ("emotion_fleet_messages_verified_total", metrics.verified, "Messages verified and stored."),
            ("emotion_fleet_messages_rejected_total", metrics.rejected, "Messages that failed verification."),
            ("emotion_fleet_messages_duplicate_total", metrics.duplicates, "Redeliveries already stored."),
            (
                "emotion_fleet_messages_skipped_total",
                metrics.skipped,
                "Unsigned-by-design or cleared topics.",
            ),
        )
        for name, counter, text in counters:
            family(name, "counter", text)
            for device, n in sorted(counter.items()):
                lines.append(f'{name}{{receiver="{rid}",device="{_label(device)}"}} {n}')
        family("emotion_fleet_lag_seconds", "gauge", "Arrival minus signing time of the last stored message.")
        for device, lag in sorted(metrics.lag_ms.items()):
            lines.append(
                f'emotion_fleet_lag_seconds{{receiver="{rid}",device="{_label(device)}"}} {lag / 1000:.3f}'
            )
        family("emotion_fleet_witness_total", "counter", "Checkpoints judged by the witness, by verdict.")
        for (device, kind), n in sorted(metrics.witness.items()):
            labels = f'receiver="{rid}",device="{_label(device)}",verdict="{kind}"'
            lines.append(f"emotion_fleet_witness_total{{{labels}}} {n}")
        family(
            "emotion_fleet_rollup_skipped_messages", "gauge",
            "Stored stats messages left out of site rollups (a body that cannot be summed).",
        )
        skipped = len(metrics.rollup_unreadable)
        lines.append(f'emotion_fleet_rollup_skipped_messages{{receiver="{rid}"}} {skipped}')
        family("emotion_fleet_db_seconds", "summary", "Time spent in the database per message.")
        lines.append(f'emotion_fleet_db_seconds_sum{{receiver="{rid}"}} {metrics.db_seconds:.6f}')
        lines.append(f'emotion_fleet_db_seconds_count{{receiver="{rid}"}} {metrics.db_calls}')
    family("emotion_fleet_missing_messages", "gauge", "Sequence numbers never received (whole fleet).")
    missing: dict[str, int] = {}
    for gap in store.gaps():
        missing[gap.device] = missing.get(gap.device, 0) + gap.last - gap.first + 1
    for device, n in sorted(missing.items()):
        lines.append(f'emotion_fleet_missing_messages{{device="{_label(device)}"}} {n}')
    return "\n".join(lines) + "\n"


def _when(ms: int | None) -> str:
    if ms is None:
        return "never"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render_page(store: Store, witness_vkey: str | None = None) -> str:
    devices = store.query("SELECT device, last_seen_ms, kid FROM devices ORDER BY device")
    witness = {
        str(r[0]): (int(r[1]), int(r[2]))
        for r in store.query("SELECT device, size, cosigned_ms FROM witness")
    }
    refused = {
        str(r[0]): int(r[1])
        for r in store.query("SELECT device, COUNT(*) FROM witness_events GROUP BY device")
    }
    rejected = store.rejected_per_device()
    gaps: dict[str, list[str]] = {}
    for gap in store.gaps():
        span = f"{gap.first}" if gap.first == gap.last else f"{gap.first}–{gap.last}"
        gaps.setdefault(gap.device, []).append(f"boot {gap.boot}: {span}")
    rows = []
    for device, last_seen, kid in devices:
        cp = witness.get(str(device))
        cosigned = f"size {cp[0]} at {_when(cp[1])}" if cp else "none"
        rows.append(
            "<tr>"
            f"<td>{_esc(device)}</td><td>{_esc(_when(int(last_seen)))}</td>"
            f"<td>{_esc(cosigned)}</td><td>{_esc(refused.get(str(device), 0))}</td>"
            f"<td>{_esc('; '.join(gaps.get(str(device), [])) or 'none')}</td>"
            f"<td>{_esc(rejected.get(str(device), 0))}</td><td><code>{_esc(kid)}</code></td>"
            "</tr>"
        )
    body = "\n".join(rows) or '<tr><td colspan="7">no device has published yet</td></tr>'
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>emotion-agent fleet</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #999;padding:.3em .6em;text-align:left}</style></head><body>"
        f"<h1>emotion-agent fleet</h1><p>{len(devices)} device(s)</p>{_witness_line(witness_vkey)}"
        "<table><thead><tr><th>device</th><th>last seen</th><th>last cosigned checkpoint</th>"
        "<th>refused checkpoints</th><th>gaps</th><th>rejected messages</th><th>key</th></tr></thead>"
        f"<tbody>{body}</tbody></table></body></html>\n"
    )


def _witness_line(vkey: str | None) -> str:
    if vkey is None:
        return "<p>witness: off</p>"
    return (
        f"<p>witness verifier key: <code>{_esc(vkey)}</code> (for the devices' "
        "<code>audit.witnesses</code> and <code>audit verify --witness</code>)</p>"
    )


class FleetWeb:
    def __init__(
        self,
        host: str,
        port: int,
        receiver_id: str,
        metrics: Metrics,
        store: Store,
        *,
        witness_vkey: str | None = None,
    ) -> None:
        web = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                web.serve(self)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.receiver_id, self.metrics, self.store = receiver_id, metrics, store
        self.witness_vkey = witness_vkey
        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name="fleet-web", daemon=True)

    def serve(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                status, kind, text = (
                    200,
                    "text/plain; version=0.0.4",
                    render_metrics(self.receiver_id, self.metrics, self.store),
                )
            elif path == "/healthz":
                self.store.query("SELECT 1")
                status, kind, text = 200, "text/plain", "ok\n"
            elif path == "/":
                page = render_page(self.store, self.witness_vkey)
                status, kind, text = 200, "text/html; charset=utf-8", page
            else:
                status, kind, text = 404, "text/plain", "not found\n"
        except Exception as exc:  # the database is down: say so, keep serving
            logger.warning("fleet page failed", exc_info=True)
            status, kind, text = 503, "text/plain", f"unavailable: {type(exc).__name__}\n"
        data = text.encode("utf-8")
        request.send_response(status)
        request.send_header("Content-Type", kind)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
