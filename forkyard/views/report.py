"""``forkyard report RUN``: one self-contained HTML file (inline CSS and SVG, no scripts,
no network) with the planned versus actual schedule as Gantt charts, per-task results with
diff stats, and every batch with its conflicts and rollbacks."""

from __future__ import annotations

import html
import time
from pathlib import Path

from forkyard.journal.events import resolve_run
from forkyard.journal.models import RunResult
from forkyard.journal.results import build_result
from forkyard.journal.state import RunManifest, RunView, load_view
from gitproc.git import Repo
from gitproc.hostile import printable
from planner import Plan

_COLORS = {"succeeded": "#3b8a3e", "failed": "#c0392b", "timed_out": "#d35400",
           "oom_killed": "#8e44ad", "cancelled": "#7f8c8d", "skipped": "#bdc3c7",
           "running": "#2980b9", "planned": "#5d8aa8", "rejected": "#e67e22",
           "lost": "#95a5a6"}

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:3px 10px;border-bottom:1px solid #eee;
text-align:left;vertical-align:top}th{background:#f6f6f6}.num{text-align:right}
.ok{color:#3b8a3e}.bad{color:#c0392b}.warn{color:#d35400}code,pre{font:12px ui-monospace,monospace}
pre{background:#f6f6f6;padding:6px;max-height:12em;overflow:auto;white-space:pre-wrap;margin:0}
.kv td:first-child{color:#666}svg text{font:11px system-ui,sans-serif}
"""


def _e(x: object) -> str:
    return html.escape(printable(str(x)), quote=True)  # agents' text: no control characters


def gantt(rows: list[tuple[str, str, float, float, str]], lanes: int, unit: str,
          width: int = 1000) -> str:
    """An SVG Gantt chart: ``rows`` = (lane label, task, start, end, color key)."""
    span = max((end for *_, end, _c in rows), default=1.0) or 1.0
    lane_h, left, top = 26, 70, 20
    height = top + lanes * lane_h + 10
    scale = (width - left - 10) / span
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'role="img">']
    for i in range(lanes):
        y = top + i * lane_h
        out.append(f'<text x="4" y="{y + 17}">agent {i}</text>'
                   f'<line x1="{left}" x2="{width - 10}" y1="{y + lane_h}" y2="{y + lane_h}" '
                   'stroke="#eee"/>')
    for k in range(6):
        x = left + (width - left - 10) * k / 5
        out.append(f'<text x="{x:.0f}" y="12" text-anchor="middle" fill="#888">'
                   f'{span * k / 5:.3g}{unit}</text>')
    for lane, task, start, end, color in rows:
        y = top + int(lane) * lane_h + 3
        x, w = left + start * scale, max(2.0, (end - start) * scale)
        out.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{lane_h - 6}" rx="3" '
                   f'fill="{_COLORS.get(color, "#999")}"><title>{_e(task)}: {start:.3g}-'
                   f'{end:.3g}{unit} ({_e(color)})</title></rect>')
        if w > 30:
            out.append(f'<text x="{x + 4:.1f}" y="{y + 14}" fill="#fff">{_e(task[: int(w / 7)])}'
                       '</text>')
    out.append("</svg>")
    return "".join(out)


def render(manifest: RunManifest, view: RunView, plan: Plan, tip_after: str,
           state: str = "finished") -> str:
    """The report's HTML; ``state``: finished, running, interrupted or crashed (a run
    still going is titled so, not by the outcome it would have if it stopped now)."""
    result = build_result(manifest, view, plan, tip_after)
    title = result.outcome if state == "finished" else state
    planned = [(str(a.agent), a.task, a.start, a.end, "planned") for a in plan.assignments]
    t0 = view.started
    actual = []
    for t in view.tasks.values():
        # Every attempt, retried and cut-off ones too, on the agent that ran it.
        for a in t.history:
            if a["agent"] is None:
                continue
            end = a["end"] if a["end"] is not None else view.last_ts
            last = a is t.history[-1]
            color = ("rejected" if last and t.rejected and not t.integrated
                     else a["status"] if a["end"] is not None or state == "running" else "lost")
            label = t.id if len(t.history) == 1 else f"{t.id} #{a['n']}"
            actual.append((str(a["agent"]), label, a["start"] - t0, end - t0, color))
    m = result.metrics
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>forkyard run {_e(result.run_id)}</title><style>{_CSS}</style></head><body>",
        f"<h1>forkyard run {_e(result.run_id)}: "
        f"<span class='{'ok' if title in ('succeeded', 'running') else 'bad'}'>{_e(title)}"
        "</span></h1><table class='kv'>",
        f"<tr><td>target</td><td>{_e(result.target)}: <code>{_e(result.target_sha_before[:12])}"
        f"</code> &rarr; <code>{_e(result.target_sha_after[:12])}</code></td></tr>",
        f"<tr><td>started</td><td>{_e(time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(t0)))}"
        "</td></tr>",
        f"<tr><td>options</td><td><code>{_e(_options(manifest))}</code></td></tr>",
        f"<tr><td>wall time</td><td>{m.wall_s:.1f}s (task time {m.total_task_s:.1f}s, "
        f"overhead {m.overhead_s:.1f}s)</td></tr>",
        f"<tr><td>speedup</td><td>{m.actual_speedup:.2f}x actual, {m.estimated_speedup:.2f}x "
        f"estimated; {m.agents_used} agents, {m.agent_utilisation:.0%} utilised</td></tr>",
        f"<tr><td>tokens</td><td>{_tokens(result)}</td></tr>",
        "</table>",
        "<h2>Planned schedule</h2>",
        gantt(planned, plan.agents, " min"),
        "<h2>Actual schedule</h2>",
        gantt(actual, manifest.options.agents, "s"),
        "<p>" + " ".join(f"<span style='color:{c}'>&#9632;</span> {_e(k)}"
                         for k, c in _COLORS.items()) + "</p>",
        "<h2>Tasks</h2><table><tr><th>task</th><th>status</th><th>integrated</th>"
        "<th class='num'>time</th><th>agent</th><th>commit</th><th>files (+/-)</th>"
        "<th>limits</th><th class='num'>tokens in/out</th><th>why</th>"
        "<th>final message / log tail</th></tr>",
    ]
    for r in result.results:
        cls = ("warn" if r.no_changes or (r.status == "succeeded" and not r.integrated)
               else "ok" if r.integrated else "bad")
        status = r.status + (" (changed nothing)" if r.no_changes else "")
        tokens = "" if r.tokens is None else f"{r.tokens.input}/{r.tokens.output}"
        said = f"<p>{_e(r.final_message[-500:])}</p>" if r.final_message else ""
        files = "<br>".join(f"{_e(f.path)} <span class='ok'>+{f.added}</span> "
                            f"<span class='bad'>-{f.removed}</span>" for f in r.files_modified)
        lim = r.limits
        parts.append(
            f"<tr><td>{_e(r.task)}</td><td class='{cls}'>{_e(status)}</td>"
            f"<td>{'yes' if r.integrated else 'no'}</td><td class='num'>{r.duration_s:.1f}s</td>"
            f"<td>{'' if r.agent is None else r.agent}</td>"
            f"<td><code>{_e((r.commit or '')[:10])}</code></td><td>{files}</td>"
            f"<td>{lim.memory_mb} MiB, {lim.cpus} cpu, {lim.pids} pids ({_e(lim.enforced_by)})"
            f"</td><td class='num'>{tokens}</td><td>{_e(r.reason)}</td>"
            f"<td>{said}<pre>{_e(r.log_tail[-1500:])}</pre></td></tr>")
    parts.append("</table><h2>Batches</h2><table><tr><th>#</th><th>tasks</th><th>outcome</th>"
                 "<th>landed</th><th>rolled back</th><th>conflicts</th></tr>")
    for b in view.batches:
        # Whole messages: a validation's names the failing tests, which a cut would lose.
        conflicts = "<br>".join(
            f"{_e(c.get('task') or 'the batch')}: {_e(c.get('kind'))}"
            + (f" in <code>{_e(c.get('path'))}</code>" if c.get("path") else "")
            + (f" with {_e(', '.join(c['with']) or 'the target')}" if c.get("with") is not None
               else "")
            + f"<pre>{_e(c.get('message', ''))}</pre>" for c in b.conflicts) or _e(b.error or "")
        cls = "ok" if b.outcome == "committed" and not b.rejected else "bad"
        parts.append(f"<tr><td>{b.index}</td><td>{_e(', '.join(b.tasks))}</td>"
                     f"<td class='{cls}'>{_e(b.outcome)}</td><td>{_e(', '.join(b.landed))}</td>"
                     f"<td>{_e(', '.join(b.rejected))}</td><td>{conflicts}</td></tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts)


def _tokens(result: RunResult) -> str:
    if result.tokens is None:
        return "not reported (no agent CLI with a stream)"
    return f"{result.tokens.input} in, {result.tokens.output} out"


def _options(manifest: RunManifest) -> str:
    """The options the run was asked for that differ from the defaults, as a person
    would write them."""
    asked = manifest.options.model_dump(exclude_defaults=True)
    return ", ".join(f"{k} = {v}" for k, v in asked.items()) or "defaults"


def write_report(repo: Repo, run_id: str | None, output: Path | None = None) -> Path:
    """Write the report of run ``run_id`` (default: ``runs/<id>/report.html``)."""
    paths = resolve_run(repo, run_id)
    manifest = RunManifest.load(paths)
    plan = Plan.model_validate(manifest.plan)
    view = load_view(paths)
    # The tip the run left, not wherever the target has moved since; the last landed
    # batch's tip for a run that never finished.
    landed = [b.new_tip for b in view.batches if b.outcome == "committed" and b.new_tip]
    tip = view.tip_after or (landed[-1] if landed else manifest.target_sha_before)
    out = output or paths.root / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    from forkyard.views.status import _lock_held

    state = ("finished" if view.finished else "interrupted" if view.interrupted
             else "running" if _lock_held(paths.lock) else "crashed")
    out.write_text(render(manifest, view, plan, tip, state), encoding="utf-8")
    return out
