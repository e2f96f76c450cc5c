"""A scenario's timeline as a picture: an inline SVG for the HTML report (no script, no external assets).

Top to bottom: the steps as spans (coloured by how they went, a failed one also
marked across the whole picture), one lane per driver showing when it was loaded,
one row of ticks per log-line source (``kernel`` first), a row of kernel-debugger
events if there were any, and a time axis in seconds. A crash or hang is a line
across the picture at its time, its summary in the hover text. Pure: a
ScenarioResult in, a string out.

A driver counts as loaded from the start of the load step that loaded it (its
DriverEntry runs inside that step) to the end of the step that unloaded it, or
to a crash, or to the end of the scenario. Whether a load or unload worked is
read from the guest's DriverStatus for that step when the guest reports one (the
embedded guest does); otherwise from the step's result: a passed plain
``load x`` loaded it, a load that expected another status did not, and a passed
unload unloaded it. A load or unload that failed, or a load refused as the
scenario expected, is a diamond on the lane where the step started, with its
status (or the step's state) on a line above the lane's bar.

Log lines are bucketed by pixel column: lines that fall on the same column
share one tick (its hover text says how many), which looks the same as drawing
each of them, so a row has at most one tick per column however long the log.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from harness.kernel.events import KERNEL, Action, DebugEvent, DriverStatus, GuestCrash, GuestHang, LogLine
from harness.ntstatus import NAMES, is_success
from harness.runner import ScenarioResult

WIDTH = 1000
PLOT_LEFT = 170.0  # left of it: lane and row labels
PLOT_RIGHT = 980.0
PLOT_WIDTH = PLOT_RIGHT - PLOT_LEFT

_FLAG_ROW = 16.0  # labels of crash, hang and failed-step lines
_STEP_ROW = 18.0
_LANE_ROW = 22.0
_MARK_TEXT = 11.0  # a lane with failed or refused loads has a line of text above its bar for them
_TICK_ROW = 18.0
_AXIS_ROW = 22.0
_LABEL_CHARS = 26
_TITLE_CHARS = 160

# The HTML report's badge colours (html._STYLE), so the picture and the badges agree.
STATE_COLOURS = {
    "passed": "#2e7d32",
    "failed": "#c62828",
    "crashed": "#6a1b9a",
    "hung": "#ef6c00",
    "infra": "#455a64",
    "error": "#455a64",
    "skipped": "#9e9e9e",
}
LOADED_COLOUR = "#66bb6a"  # a driver's loaded interval: the passed green, lighter so marks on it stand out
REFUSED_COLOUR = "#9e9e9e"  # a load that did not load, as the scenario expected
CRASH_COLOUR = STATE_COLOURS["crashed"]
HANG_COLOUR = STATE_COLOURS["hung"]
KD_COLOUR = "#455a64"
# Kernel lines in the report's "log" blue; other sources get the next colour in turn.
_SOURCE_COLOURS = ("#1565c0", "#6d4c41", "#00838f", "#ad1457", "#827717", "#5d4037")

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_STATUS_NAMES = {value: name for name, value in NAMES.items()}


def _esc(text: object) -> str:
    """Text for an SVG attribute or element: XML-escaped, without characters XML 1.0 cannot carry."""
    return html.escape(_NOT_XML.sub("\ufffd", str(text)), quote=True)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _state_colour(state: str) -> str:
    return STATE_COLOURS.get(state, STATE_COLOURS["infra"])


def _status(value: int) -> str:
    return _STATUS_NAMES.get(value, f"0x{value:08X}")


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class _Step:
    """A step that ran, as the picture draws it."""

    number: int
    kind: str
    description: str
    state: str
    message: str
    start: float
    end: float


@dataclass(frozen=True)
class _Mark:
    """Something that happened to a driver and is not an interval: a failed or refused load or unload."""

    t: float
    failed: bool  # the step failed (or hung, or crashed); otherwise the scenario expected this
    colour: str
    label: str
    title: str


@dataclass
class _Lane:
    name: str
    service: str = ""
    intervals: list[tuple[float, float]] = field(default_factory=list)
    marks: list[_Mark] = field(default_factory=list)
    loaded_since: float | None = None


def _all_steps(result: ScenarioResult) -> list[_Step]:
    """Every step of the scenario, run or not; from the Action events when the result has no step list."""
    if result.steps:
        return [_Step(s.index + 1, s.kind, s.description, s.state, s.message, s.start, s.end) for s in result.steps]
    actions = [event for event in result.events if isinstance(event, Action)]
    return [
        _Step(number, a.kind, a.target, "passed" if a.ok else "failed", a.outcome, a.t, a.end)
        for number, a in enumerate(sorted(actions, key=lambda a: a.t), start=1)
    ]


def _driver(step: _Step) -> str | None:
    """The logical driver name of a load or unload step (``load sender (expect ...)`` -> ``sender``)."""
    if step.kind not in ("load", "unload"):
        return None
    words = step.description.split()
    return words[1] if len(words) > 1 and words[0] == step.kind else None


def _claim_statuses(control: Sequence[_Step], statuses: Sequence[DriverStatus]) -> list[DriverStatus | None]:
    """The guest's DriverStatus for each load/unload step, if it reported one.

    The status of a step comes after the step started and, since the guest
    reports it while loading, before the next load or unload starts; it may be
    read a moment after the step ended. Statuses before the first step are the
    guest's own drivers starting.
    """
    claimed: list[DriverStatus | None] = []
    used: set[int] = set()
    for i, step in enumerate(control):
        until = control[i + 1].start if i + 1 < len(control) else math.inf
        found = None
        for j, status in enumerate(statuses):
            if j not in used and status.action == step.kind and step.start <= status.t < until:
                found = status
                used.add(j)
                break
        claimed.append(found)
    return claimed


def _lanes(steps: Sequence[_Step], result: ScenarioResult, stop: float) -> list[_Lane]:
    lanes: dict[str, _Lane] = {}
    for step in steps:
        name = _driver(step)
        if name is not None and name not in lanes:
            lanes[name] = _Lane(name)
    control = sorted((s for s in steps if s.state != "skipped" and _driver(s) is not None), key=lambda s: s.start)
    statuses = sorted((e for e in result.events if isinstance(e, DriverStatus)), key=lambda e: e.t)
    for step, status in zip(control, _claim_statuses(control, statuses), strict=True):
        lane = lanes[str(_driver(step))]
        if status is not None and not lane.service:
            lane.service = status.service
        said = f" returned {_status(status.status)}" if status is not None else ""
        title = f"step {step.number} {step.description}: {step.state}{said}; {step.message}"
        if step.kind == "load":
            worked = is_success(status.status) if status is not None else step.state == "passed" and step.description == f"load {lane.name}"
            if worked and lane.loaded_since is None:
                lane.loaded_since = step.start
            if step.state != "passed":
                label = f"load: {_status(status.status)}" if status is not None else f"load {step.state}"
                lane.marks.append(_Mark(step.start, True, _state_colour(step.state), label, title))
            elif not worked:
                label = f"refused: {_status(status.status)}" if status is not None else "not loaded (as expected)"
                lane.marks.append(_Mark(step.start, False, REFUSED_COLOUR, label, title))
        else:
            worked = is_success(status.status) if status is not None else step.state == "passed"
            if worked and lane.loaded_since is not None:
                lane.intervals.append((lane.loaded_since, max(step.end, lane.loaded_since)))
                lane.loaded_since = None
            if step.state != "passed":
                label = f"unload: {_status(status.status)}" if status is not None else f"unload {step.state}"
                lane.marks.append(_Mark(step.start, True, _state_colour(step.state), label, title))
    for lane in lanes.values():
        if lane.loaded_since is not None:
            lane.intervals.append((lane.loaded_since, max(stop, lane.loaded_since)))
            lane.loaded_since = None
    return list(lanes.values())


def _span(result: ScenarioResult, steps: Iterable[_Step]) -> float:
    """The axis's length: the scenario's duration, stretched to show events stamped after it."""
    times = [result.duration]
    for event in result.events:
        times.append(event.t)
        if isinstance(event, Action):
            times.append(event.end)
    times.extend(step.end for step in steps)
    span = max(times)
    return span if span >= 0.001 else 1.0  # nothing took a measurable time: a one-second axis with everything at 0


def _axis_step(span: float) -> float:
    """A 1-2-5 step that gives at most 10 labelled ticks."""
    raw = span / 10
    power = 10.0 ** math.floor(math.log10(raw))
    return next(factor * power for factor in (1.0, 2.0, 5.0, 10.0) if factor * power >= raw * (1 - 1e-9))


class _Canvas:
    """The SVG's parts and its time-to-x scale."""

    def __init__(self, span: float) -> None:
        self.span = span
        self.parts: list[str] = []

    def x(self, t: float) -> float:
        return PLOT_LEFT + min(max(t, 0.0), self.span) / self.span * PLOT_WIDTH

    def add(self, text: str) -> None:
        self.parts.append(text)

    def label(self, y: float, text: str, title: str) -> None:
        self.add(
            f'<text x="{_num(PLOT_LEFT - 8)}" y="{_num(y)}" text-anchor="end" dominant-baseline="middle" fill="#222">'
            f"<title>{_esc(title)}</title>{_esc(_short(text, _LABEL_CHARS))}</text>"
        )

    def note(self, y: float, text: str) -> None:
        self.add(
            f'<text class="empty" x="{_num(PLOT_LEFT + PLOT_WIDTH / 2)}" y="{_num(y)}" text-anchor="middle" '
            f'dominant-baseline="middle" fill="#666">{_esc(text)}</text>'
        )

    def guide(self, t: float, bottom: float, colour: str, cls: str, label: str, title: str, dashed: bool) -> None:
        """A line across the picture at ``t``, from its top down to ``bottom``, with a label in the flag row."""
        x = _num(self.x(t))
        dash = ' stroke-dasharray="4 3"' if dashed else ""
        anchor = "end" if self.x(t) > PLOT_RIGHT - 80 else "start"
        dx = -4 if anchor == "end" else 4
        self.add(
            f'<g class="{cls}"><title>{_esc(title)}</title>'
            f'<line x1="{x}" y1="0" x2="{x}" y2="{_num(bottom)}" stroke="{colour}" stroke-width="2"{dash}/>'
            f'<text x="{_num(self.x(t) + dx)}" y="{_num(_FLAG_ROW - 4)}" text-anchor="{anchor}" font-weight="600" fill="{colour}">'
            f"{_esc(label)}</text></g>"
        )


def _axis(canvas: _Canvas, top: float, bottom: float) -> None:
    """Grid lines at 1-2-5 steps from ``top`` down to the axis line at ``bottom``, labelled in seconds."""
    step = _axis_step(canvas.span)
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    canvas.add('<g class="axis" font-size="10" fill="#666">')
    canvas.add(f'<line x1="{_num(PLOT_LEFT)}" y1="{_num(bottom)}" x2="{_num(PLOT_RIGHT)}" y2="{_num(bottom)}" stroke="#999"/>')
    for i in range(int(canvas.span / step + 1e-9) + 1):
        t = i * step
        x = _num(canvas.x(t))
        canvas.add(
            f'<line x1="{x}" y1="{_num(top)}" x2="{x}" y2="{_num(bottom + 4)}" stroke="#e6e6e6"/>'
            f'<text class="axis-label" x="{x}" y="{_num(bottom + 15)}" text-anchor="middle">{t:.{decimals}f}s</text>'
        )
    canvas.add("</g>")


def _steps(canvas: _Canvas, top: float, ran: Sequence[_Step], total: int) -> None:
    """The steps that ran as spans in their state's colour, numbered where there is room."""
    canvas.label(top + _STEP_ROW / 2, "steps", f"{len(ran)} of {total} steps ran")
    canvas.add('<g class="steps">')
    for s in ran:
        x0 = canvas.x(s.start)
        width = max(canvas.x(s.end) - x0, 2.0)
        cls = "step" if s.state == "passed" else f"step {_esc(s.state)}"
        title = f"step {s.number} {s.description}: {s.state} ({s.end - s.start:.3f}s) {s.message}"
        canvas.add(
            f'<g class="{cls}" data-step="{s.number}"><title>{_esc(title)}</title>'
            f'<rect x="{_num(x0)}" y="{_num(top + 2)}" width="{_num(width)}" height="{_num(_STEP_ROW - 4)}" '
            f'fill="{_state_colour(s.state)}" stroke="#fff"/>'
        )
        if width >= 16:
            canvas.add(
                f'<text x="{_num(x0 + width / 2)}" y="{_num(top + _STEP_ROW / 2)}" text-anchor="middle" dominant-baseline="middle" '
                f'font-size="10" fill="#fff">{s.number}</text>'
            )
        canvas.add("</g>")
    canvas.add("</g>")


def _lane_height(lane: _Lane) -> float:
    return _LANE_ROW + (_MARK_TEXT if lane.marks else 0.0)


def _lane(canvas: _Canvas, top: float, lane: _Lane) -> None:
    """A driver's lane: a thin line, a bar for each loaded interval, a diamond for each failed or refused load or unload.

    The diamonds' labels go on a line of their own above the bar, so a driver loaded just after a refused load
    does not hide the refusal's status.
    """
    service = f" (service {lane.service})" if lane.service else ""
    text_y = top + _MARK_TEXT - 2
    top += _lane_height(lane) - _LANE_ROW
    mid = top + _LANE_ROW / 2
    canvas.label(mid, lane.name, f"driver {lane.name}{service}")
    canvas.add(f'<g class="lane" data-driver="{_esc(lane.name)}">')
    canvas.add(f'<line x1="{_num(PLOT_LEFT)}" y1="{_num(mid)}" x2="{_num(PLOT_RIGHT)}" y2="{_num(mid)}" stroke="#ccc"/>')
    for start, end in lane.intervals:
        x0 = canvas.x(start)
        canvas.add(
            f'<rect class="loaded" x="{_num(x0)}" y="{_num(top + 5)}" width="{_num(max(canvas.x(end) - x0, 2.0))}" '
            f'height="{_num(_LANE_ROW - 10)}" fill="{LOADED_COLOUR}">'
            f"<title>{_esc(f'{lane.name} loaded from +{start:.3f}s to +{end:.3f}s')}</title></rect>"
        )
    for mark in lane.marks:
        x = canvas.x(mark.t)
        text_colour = mark.colour if mark.failed else "#616161"  # grey text a shade darker than the mark
        anchor, text_x = ("end", x + 6) if x > PLOT_RIGHT - 200 else ("start", x - 6)
        canvas.add(
            f'<g class="mark {"failed" if mark.failed else "refused"}"><title>{_esc(mark.title)}</title>'
            f'<path d="M{_num(x)} {_num(mid - 6)}l6 6l-6 6l-6 -6z" fill="{mark.colour}" stroke="#fff" shape-rendering="auto"/>'
            # A white halo keeps the label readable over the grid lines.
            f'<text x="{_num(text_x)}" y="{_num(text_y)}" text-anchor="{anchor}" font-size="10" fill="{text_colour}" '
            f'stroke="#fff" stroke-width="3" paint-order="stroke">{_esc(mark.label)}</text></g>'
        )
    canvas.add("</g>")


def _tick_row(canvas: _Canvas, y: float, cls: str, source: str, colour: str, items: Sequence[tuple[float, str]]) -> None:
    """One row of ticks, one per pixel column that has any item (``items``: time and text, sorted by time)."""
    canvas.label(y + _TICK_ROW / 2, f"{source} \u00b7 {len(items)}", f"{source}: {len(items)} lines, one tick per pixel column")
    canvas.add(f'<g class="{cls}" data-source="{_esc(source)}" data-lines="{len(items)}" stroke="{colour}" stroke-width="1">')
    buckets: dict[int, list[tuple[float, str]]] = {}
    for t, text in items:
        column = min(int(canvas.x(t) - PLOT_LEFT), int(PLOT_WIDTH) - 1)  # the end of the axis is the last column
        buckets.setdefault(column, []).append((t, text))
    for column, bucket in sorted(buckets.items()):
        x = _num(PLOT_LEFT + column + 0.5)
        first_t, first_text = bucket[0]
        if len(bucket) == 1:
            title = f"+{first_t:.3f}s {_short(first_text, _TITLE_CHARS)}"
        else:
            title = f"+{first_t:.3f}s to +{bucket[-1][0]:.3f}s: {len(bucket)} lines; first: {_short(first_text, _TITLE_CHARS)}"
        canvas.add(
            f'<line class="tick" data-count="{len(bucket)}" x1="{x}" y1="{_num(y + 3)}" x2="{x}" y2="{_num(y + _TICK_ROW - 3)}">'
            f"<title>{_esc(title)}</title></line>"
        )
    canvas.add("</g>")


def render_svg(result: ScenarioResult) -> str:
    """The timeline picture of one scenario, as an ``<svg>`` element to put inline in HTML (valid XML on its own)."""
    everything = _all_steps(result)
    ran = [step for step in everything if step.state != "skipped"]
    canvas = _Canvas(_span(result, ran))
    crash = result.crash or next((e for e in result.events if isinstance(e, GuestCrash)), None)
    hangs = [e for e in result.events if isinstance(e, GuestHang)]
    lanes = _lanes(everything, result, crash.t if crash is not None else canvas.span)
    lines = sorted((e for e in result.events if isinstance(e, LogLine)), key=lambda e: e.t)
    sources = sorted({line.source for line in lines}, key=lambda s: (s != KERNEL, s))
    kd = sorted((e for e in result.events if isinstance(e, DebugEvent)), key=lambda e: e.t)

    rows = sum(_lane_height(lane) for lane in lanes) + len(sources) * _TICK_ROW + (_TICK_ROW if kd else 0)
    steps_top = _FLAG_ROW
    lanes_top = steps_top + _STEP_ROW + 4
    axis_top = lanes_top + max(rows, _TICK_ROW)
    height = axis_top + _AXIS_ROW

    _axis(canvas, steps_top, axis_top)  # first, so everything else is drawn over its grid
    _steps(canvas, steps_top, ran, len(everything))
    y = lanes_top
    for lane in lanes:
        _lane(canvas, y, lane)
        y += _lane_height(lane)
    for index, source in enumerate(sources):
        items = [(line.t, line.text) for line in lines if line.source == source]
        _tick_row(canvas, y, "log", source, _SOURCE_COLOURS[index % len(_SOURCE_COLOURS)], items)
        y += _TICK_ROW
    if kd:
        _tick_row(canvas, y, "kd", "kd events", KD_COLOUR, [(event.t, f"{event.kind}: {event.summary}") for event in kd])
    if not ran and not result.events:
        canvas.note(steps_top + _STEP_ROW / 2, "nothing ran: no step started and the guest reported nothing")
    elif not lanes and not sources and not kd:
        canvas.note(lanes_top + _TICK_ROW / 2, "no drivers and no log lines")

    # Lines across the picture last, so they are on top.
    for s in ran:
        # A crashed or hung step ends where the crash or hang line is drawn.
        if s.state in ("failed", "infra"):
            title = f"step {s.number} {s.description}: {s.state}: {s.message}"
            canvas.guide(s.end, axis_top, _state_colour(s.state), "failed-step", f"\u2717 step {s.number}", title, dashed=True)
    for hang in hangs:
        canvas.guide(hang.t, axis_top, HANG_COLOUR, "hang", "hang", f"hang at +{hang.t:.3f}s: {hang.summary}", dashed=False)
    if crash is not None:
        code = f" (0x{crash.code:08X})" if crash.code is not None else ""
        canvas.guide(crash.t, axis_top, CRASH_COLOUR, "crash", "crash", f"crash at +{crash.t:.3f}s: {crash.summary}{code}", dashed=False)

    title = f"timeline of {result.name}: {result.outcome}, {canvas.span:.3f}s"
    # crispEdges: one-pixel ticks and bar edges stay sharp wherever the page puts the picture.
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{WIDTH}" height="{_num(height)}" '
        f'viewBox="0 0 {WIDTH} {_num(height)}" font-family="system-ui,sans-serif" font-size="11" shape-rendering="crispEdges" '
        f'role="img"><title>{_esc(title)}</title>' + "".join(canvas.parts) + "</svg>"
    )
