"""A self-contained HTML report: per scenario its steps, verdict and timeline."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from harness.reports.svg import render_svg
from harness.reports.timeline import context_line, event_row
from harness.runner import ScenarioResult
from harness.triage.model import Triage

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin:0}
section{border:1px solid #ccc;border-radius:6px;margin:1em 0;padding:.8em}
.badge{display:inline-block;padding:0 .5em;border-radius:4px;color:#fff;font-weight:600;margin-right:.5em}
.passed{background:#2e7d32}.failed{background:#c62828}.crashed{background:#6a1b9a}
.hung{background:#ef6c00}.infra,.error{background:#455a64}.skipped{background:#9e9e9e}
table{border-collapse:collapse;width:100%;margin:.5em 0}
td,th{border-bottom:1px solid #eee;padding:2px 6px;text-align:left;vertical-align:top}
td.t{white-space:nowrap;color:#666;font-variant-numeric:tabular-nums}
pre,td.text{font-family:ui-monospace,monospace;white-space:pre-wrap;tab-size:8}
tr.log td.kind{color:#1565c0}tr.action td.kind{color:#2e7d32}tr.crash td{background:#f3e5f5}tr.status td.kind{color:#6d4c41}
.message{margin:.4em 0;font-weight:600}
table.grid{width:auto}table.grid td,table.grid th{padding:2px 10px}
.variant{color:#555;font-weight:400}.name{color:#666}details{margin-top:.4em}
figure.timeline{margin:.6em 0;overflow-x:auto}figure.timeline svg{display:block;max-width:100%;height:auto}
.signature{font-family:ui-monospace,monospace;font-weight:600}tr.test td{background:#fff8e1}
"""


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _scenario(result: ScenarioResult, out_dir: Path) -> str:
    qualifiers = "".join(f' <span class="variant">{_esc(part)}</span>' for part in (result.image, result.build) if part)
    parts = [
        f'<section id="{_esc(result.key)}"><h2><span class="badge {result.outcome}">{result.outcome}</span>{_esc(result.name)}'
        f"{qualifiers}</h2>"
    ]
    parts.append(f"<div>{_esc(result.path)} &middot; guest {_esc(result.guest or '-')} &middot; {result.duration:.2f}s")
    if result.raw_log.exists():
        parts.append(f' &middot; <a href="{_esc(os.path.relpath(result.raw_log, out_dir))}">raw kernel log</a>')
    parts.append("</div>")
    if result.message:
        parts.append(f'<div class="message">{_esc(result.message)}</div>')
    parts.append(f'<figure class="timeline">{render_svg(result)}</figure>')
    if result.crash is not None and result.crash.evidence:
        parts.append("<div>evidence:</div><pre>" + "".join(f"{_esc(line)}\n" for line in result.crash.evidence) + "</pre>")
    evidence = result.crash_evidence
    if evidence.note:
        links = "".join(f' <a href="{_esc(os.path.relpath(path, out_dir))}">{_esc(path.name)}</a>' for path in evidence.files)
        parts.append(f'<div class="evidence">crash dump: {_esc(evidence.note)}{links}</div>')
    if result.signature is not None:
        parts.append(f'<div>signature: <span class="signature">{_esc(result.signature)}</span></div>')
    if result.triage is not None:
        parts.append(_triage(result.triage))
    if result.context:
        parts.append(
            "<div>kernel log before it:</div><pre>" + "".join(f"{_esc(context_line(line))}\n" for line in result.context) + "</pre>"
        )
    parts.append("<table><tr><th>#</th><th>line</th><th>step</th><th>result</th><th>detail</th><th>time</th></tr>")
    for step in result.steps:
        parts.append(
            f"<tr><td>{step.index + 1}</td><td>{step.line}</td><td>{_esc(step.description)}</td>"
            f'<td><span class="badge {step.state}">{step.state}</span></td><td>{_esc(step.message)}</td>'
            f'<td class="t">{step.end - step.start:.3f}s</td></tr>'
        )
    parts.append("</table>")
    rows = sorted((event_row(event) for event in result.events), key=lambda row: row[0])
    parts.append(f"<details{' open' if not result.passed else ''}><summary>timeline ({len(rows)} events)</summary><table>")
    for t, kind, text in rows:
        parts.append(f'<tr class="{kind}"><td class="t">+{t:.3f}s</td><td class="kind">{kind}</td><td class="text">{_esc(text)}</td></tr>')
    parts.append("</table></details></section>")
    return "".join(parts)


def _triage(triage: Triage) -> str:
    """Each thread's frames: function, source line, module+offset, unloaded; frames in drivers under test marked."""
    parts = []
    for thread in triage.threads:
        title = f"{triage.kind}: thread {thread.thread:04x}" + (" (faulting)" if triage.kind == "crash" else "")
        parts.append(f"<div>{_esc(title)}</div><table><tr><th>#</th><th>frame</th><th>source</th><th>module</th><th>how</th></tr>")
        for index, frame in enumerate(thread.frames):
            source = f"{frame.file}:{frame.line}" if frame.file and frame.line else (frame.file or "")
            parts.append(
                f'<tr class="{"test" if frame.under_test else ""}"><td>{index}</td><td class="text">{_esc(frame.label)}</td>'
                f'<td class="text" title="{_esc(source)}">{_esc(frame.source)}</td><td class="text">{_esc(frame.where)}</td>'
                f"<td>{_esc(frame.how)}</td></tr>"
            )
        parts.append("</table>")
        if thread.end:
            parts.append(f"<div>walk ended: {_esc(thread.end)}</div>")
    parts.extend(f"<div>note: {_esc(note)}</div>" for note in triage.notes)
    return f"<details open><summary>where ({_esc(triage.kind)})</summary>{''.join(parts)}</details>"


def _signatures(results: Sequence[ScenarioResult]) -> str:
    """Crashes and hangs grouped by signature."""
    groups: dict[str, list[ScenarioResult]] = {}
    for result in results:
        if result.signature is not None:
            groups.setdefault(result.signature, []).append(result)
    if not groups:
        return ""
    rows = "".join(
        f'<tr><td class="signature">{_esc(signature)}</td><td>{len(members)}</td><td>'
        + ", ".join(f'<a href="#{_esc(r.key)}">{_esc(r.key)}</a>' for r in members)
        + "</td></tr>"
        for signature, members in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    )
    return f"<h2>Crashes and hangs by signature</h2><table><tr><th>signature</th><th>count</th><th>scenarios</th></tr>{rows}</table>"


def _grid(results: Sequence[ScenarioResult]) -> str:
    """Scenarios down, images (and builds, for compare) across, each cell the outcome linking to its section; "" for a
    run with neither images nor builds."""
    columns = list(dict.fromkeys((r.image, r.build) for r in results))
    if columns == [(None, None)]:
        return ""
    rows = list(dict.fromkeys((r.id, r.name) for r in results))
    cells = {(r.id, r.image, r.build): r for r in results}
    head = "".join(f"<th>{_esc(' · '.join(part for part in column if part))}</th>" for column in columns)
    body = []
    for scenario, name in rows:
        row = [f'<td><a href="#{_esc(scenario)}">{_esc(scenario)}</a> <span class="name">{_esc(name)}</span></td>']
        for image, build in columns:
            found = cells.get((scenario, image, build))
            row.append(
                f'<td><a href="#{_esc(found.key)}"><span class="badge {found.outcome}">{found.outcome}</span></a></td>'
                if found is not None
                else "<td>-</td>"
            )
        body.append("<tr>" + "".join(row) + "</tr>")
    return f'<table class="grid"><tr><th>scenario</th>{head}</tr>{"".join(body)}</table>'


def render_html(results: Sequence[ScenarioResult], out_dir: Path) -> str:
    counts: dict[str, int] = {}
    for result in results:
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    summary = " ".join(f'<span class="badge {outcome}">{count} {outcome}</span>' for outcome, count in sorted(counts.items()))
    index = (
        _grid(results)
        or "<ul>"
        + "".join(
            f'<li><a href="#{_esc(r.key)}">{_esc(r.name)}</a> <span class="badge {r.outcome}">{r.outcome}</span></li>' for r in results
        )
        + "</ul>"
    )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    body = "".join(_scenario(result, out_dir) for result in results)
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>kcb-harness report</title><style>{_STYLE}</style></head>"
        f"<body><h1>kcb-harness report</h1><p>{len(results)} scenarios &middot; {summary} &middot; {generated}</p>"
        f"{index}{_signatures(results)}{body}</body></html>\n"
    )


def write_html(results: Sequence[ScenarioResult], path: Path) -> None:
    path.write_text(render_html(results, path.parent), encoding="utf-8")
