"""The timeline picture: lanes per driver, ticks per log source, failed steps, crashes; parsed back with ElementTree."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from harness.kernel.events import Action, DebugEvent, DriverStatus, GuestCrash, GuestHang, LogLine
from harness.reports import write_reports
from harness.reports.svg import PLOT_LEFT, PLOT_RIGHT, PLOT_WIDTH, render_svg
from harness.runner import ScenarioResult, StepResult
from tests.timeline_results import CRASH_SUMMARY, two_drivers_failed_and_crashed

NS = "{http://www.w3.org/2000/svg}"


def parse(result: ScenarioResult) -> ET.Element:
    return ET.fromstring(render_svg(result))


def groups(root: ET.Element, cls: str) -> list[ET.Element]:
    return [g for g in root.iter() if cls in (g.get("class") or "").split()]


def lane(root: ET.Element, driver: str) -> ET.Element:
    (found,) = [g for g in groups(root, "lane") if g.get("data-driver") == driver]
    return found


def loaded(root: ET.Element, driver: str) -> list[float]:
    """Left and right x of each loaded interval drawn in the driver's lane, in one list."""
    rects = [r for r in lane(root, driver).iter(f"{NS}rect") if r.get("class") == "loaded"]
    return [x for r in rects for x in (float(r.get("x", "")), float(r.get("x", "")) + float(r.get("width", "")))]


def x_of(t: float, span: float) -> float:
    return PLOT_LEFT + t / span * PLOT_WIDTH


def titles(element: ET.Element) -> list[str]:
    return [t.text or "" for t in element.iter(f"{NS}title")]


def notes(root: ET.Element) -> list[str | None]:
    return [t.text for t in root.iter(f"{NS}text") if t.get("class") == "empty"]


def result_with(tmp_path: Path, steps: list[StepResult], events: list[object], duration: float) -> ScenarioResult:
    result = ScenarioResult(id="s", name="s", path=Path("s.yaml"), guest="wine", run_dir=tmp_path)
    result.steps, result.duration = steps, duration
    result.events = [e for e in events if isinstance(e, LogLine | DriverStatus | GuestCrash | GuestHang | DebugEvent | Action)]
    return result


def test_one_lane_per_driver_loaded_from_its_load_to_the_crash(tmp_path: Path) -> None:
    root = parse(two_drivers_failed_and_crashed(tmp_path))
    assert [g.get("data-driver") for g in groups(root, "lane")] == ["sender", "receiver"]
    left, right = loaded(root, "sender")
    assert left == pytest.approx(x_of(0.5, 4.0), abs=0.1) and right == pytest.approx(x_of(3.5, 4.0), abs=0.1)
    left, right = loaded(root, "receiver")
    assert left == pytest.approx(x_of(1.0, 4.0), abs=0.1) and right == pytest.approx(x_of(3.5, 4.0), abs=0.1)
    # The service the guest named for each load is in the lane label's hover text.
    assert "driver receiver (service sysRecv1)" in titles(root)


def test_one_tick_per_log_line_per_source(tmp_path: Path) -> None:
    root = parse(two_drivers_failed_and_crashed(tmp_path))
    rows = {g.get("data-source"): g for g in groups(root, "log")}
    assert list(rows) == ["kernel", "com2"]
    assert len(groups(rows["kernel"], "tick")) == 6 and rows["kernel"].get("data-lines") == "6"
    assert len(groups(rows["com2"], "tick")) == 4
    xs = [float(t.get("x1", "")) for t in groups(rows["com2"], "tick")]
    assert xs == pytest.approx([x_of(t, 4.0) for t in (0.2, 0.8, 2.6, 3.4)], abs=1.0)
    assert "+0.800s console 0.8" in titles(rows["com2"])


def test_a_failed_step_is_marked_across_the_picture(tmp_path: Path) -> None:
    root = parse(two_drivers_failed_and_crashed(tmp_path))
    steps = groups(root, "step")
    assert [g.get("data-step") for g in steps] == ["1", "2", "3"]  # steps 4 and 5 never ran
    (failed,) = [g for g in steps if "failed" in (g.get("class") or "").split()]
    assert failed.get("data-step") == "3"
    rect = failed.find(f"{NS}rect")
    assert rect is not None and rect.get("fill") == "#c62828"
    (guide,) = groups(root, "failed-step")
    line = guide.find(f"{NS}line")
    assert line is not None and float(line.get("x1", "")) == pytest.approx(x_of(3.1, 4.0), abs=0.1)
    assert any(t.startswith("step 3 expect at least 2 of line 'notify' within 2s: failed: saw 0 lines") for t in titles(guide))


def test_a_crash_is_flagged_at_its_time_with_its_summary_escaped(tmp_path: Path) -> None:
    text = render_svg(two_drivers_failed_and_crashed(tmp_path))
    assert "&lt;sysRecv1.sys&gt; &amp; &quot;friends&quot;" in text and "<sysRecv1.sys>" not in text
    (crash,) = groups(ET.fromstring(text), "crash")
    assert titles(crash) == [f"crash at +3.500s: {CRASH_SUMMARY} (0xC0000005)"]
    line = crash.find(f"{NS}line")
    assert line is not None and float(line.get("x1", "")) == pytest.approx(x_of(3.5, 4.0), abs=0.1)
    assert line.get("stroke") == "#6a1b9a"


def test_load_and_unload_intervals_failed_and_refused_loads(tmp_path: Path) -> None:
    steps = [
        StepResult(0, 1, "load", "load a", "passed", "ok", 1.0, 2.0),
        StepResult(1, 2, "load", "load b (expect STATUS_OBJECT_NAME_NOT_FOUND (0xC0000034))", "passed", "", 2.0, 3.0),
        StepResult(2, 3, "unload", "unload a", "passed", "ok", 4.0, 5.0),
        StepResult(3, 4, "load", "load a", "passed", "ok", 6.0, 7.0),
        StepResult(4, 5, "load", "load c", "failed", "expected STATUS_SUCCESS (0x00000000), got 0xC0000001", 8.0, 9.0),
    ]
    statuses = [DriverStatus(2.5, "load", "svc-b", 0xC0000034), DriverStatus(8.5, "load", "svc-c", 0xC0000001)]
    root = parse(result_with(tmp_path, steps, list(statuses), 10.0))
    assert [g.get("data-driver") for g in groups(root, "lane")] == ["a", "b", "c"]
    assert loaded(root, "a") == pytest.approx([x_of(1, 10), x_of(5, 10), x_of(6, 10), x_of(10, 10)], abs=0.1)
    assert loaded(root, "b") == [] and loaded(root, "c") == []
    (refused,) = groups(lane(root, "b"), "refused")
    assert "refused: STATUS_OBJECT_NAME_NOT_FOUND" in "".join(refused.itertext())
    (failed,) = groups(lane(root, "c"), "failed")
    assert "load: STATUS_UNSUCCESSFUL" in "".join(failed.itertext())


def test_a_load_whose_status_says_loaded_counts_even_when_the_step_failed(tmp_path: Path) -> None:
    # The scenario expected a refusal; the guest loaded the driver: it is loaded, and the step is marked failed.
    steps = [StepResult(0, 1, "load", "load a (expect STATUS_ACCESS_DENIED (0xC0000022))", "failed", "got STATUS_SUCCESS", 1.0, 2.0)]
    root = parse(result_with(tmp_path, steps, [DriverStatus(2.1, "load", "a", 0)], 4.0))
    assert loaded(root, "a") == pytest.approx([x_of(1, 4), x_of(4, 4)], abs=0.1)
    assert len(groups(lane(root, "a"), "failed")) == 1


def test_a_failed_unload_leaves_the_driver_loaded_and_is_marked_when_tried(tmp_path: Path) -> None:
    steps = [
        StepResult(0, 1, "load", "load a", "passed", "ok", 1.0, 2.0),
        StepResult(1, 2, "unload", "unload a", "failed", "expected STATUS_SUCCESS (0x00000000), got 0xC0000001", 3.0, 4.0),
    ]
    statuses = [DriverStatus(1.5, "load", "svc-a", 0), DriverStatus(3.5, "unload", "svc-a", 0xC0000001)]
    root = parse(result_with(tmp_path, steps, list(statuses), 5.0))
    assert loaded(root, "a") == pytest.approx([x_of(1, 5), x_of(5, 5)], abs=0.1)
    (failed,) = groups(lane(root, "a"), "failed")
    path = failed.find(f"{NS}path")
    assert path is not None and (path.get("d") or "").startswith(f"M{x_of(3, 5):g} ")
    assert "".join(failed.itertext()).endswith("unload: STATUS_UNSUCCESSFUL")


def test_without_driver_statuses_the_step_results_decide(tmp_path: Path) -> None:
    # The VM guest reports no DriverStatus events; the Action events stand in for a missing step list.
    actions: list[object] = [
        Action(0.0, 1.0, "load", "load a", "ok"),
        Action(1.0, 2.0, "load", "load b (expect STATUS_ACCESS_DENIED (0xC0000022))", "STATUS_ACCESS_DENIED"),
        Action(2.0, 3.0, "unload", "unload a", "ok"),
    ]
    root = parse(result_with(tmp_path, [], actions, 3.0))
    assert loaded(root, "a") == pytest.approx([x_of(0, 3), x_of(3, 3)], abs=0.1)
    assert loaded(root, "b") == [] and len(groups(lane(root, "b"), "refused")) == 1


def test_thousands_of_lines_share_one_tick_per_pixel_column(tmp_path: Path) -> None:
    lines: list[object] = [LogLine(i / 1000, f"line {i}") for i in range(20_000)]
    root = parse(result_with(tmp_path, [], lines, 20.0))
    (row,) = groups(root, "log")
    ticks = groups(row, "tick")
    assert row.get("data-lines") == "20000" and len(ticks) <= PLOT_WIDTH
    assert sum(int(t.get("data-count", "")) for t in ticks) == 20_000
    assert all(PLOT_LEFT <= float(t.get("x1", "")) <= PLOT_RIGHT for t in ticks)


def test_no_events_and_zero_duration_still_draw_an_axis(tmp_path: Path) -> None:
    root = parse(result_with(tmp_path, [StepResult(0, 1, "load", "load a")], [], 0.0))
    assert [g.get("data-driver") for g in groups(root, "lane")] == ["a"] and loaded(root, "a") == []
    labels = [t.text for t in root.iter(f"{NS}text") if t.get("class") == "axis-label"]
    assert labels[0] == "0.0s" and len(labels) >= 2
    assert notes(root) == ["nothing ran: no step started and the guest reported nothing"]
    assert notes(parse(result_with(tmp_path, [], [], 0.0))) == ["nothing ran: no step started and the guest reported nothing"]
    waited = parse(result_with(tmp_path, [StepResult(0, 1, "wait", "wait 1s", "passed", "", 0.0, 1.0)], [], 1.0))
    assert notes(waited) == ["no drivers and no log lines"]


def test_events_past_the_end_stretch_the_axis(tmp_path: Path) -> None:
    events: list[object] = [LogLine(1.0, "in time"), LogLine(8.0, "late"), GuestHang(9.0, "no output <for> 5s")]
    root = parse(result_with(tmp_path, [], events, 4.0))
    (row,) = groups(root, "log")
    assert [float(t.get("x1", "")) for t in groups(row, "tick")] == pytest.approx([x_of(1, 9), x_of(8, 9)], abs=1.0)
    (hang,) = groups(root, "hang")
    assert titles(hang) == ["hang at +9.000s: no output <for> 5s"]


def test_control_characters_and_other_sources_and_kd_events(tmp_path: Path) -> None:
    events: list[object] = [
        LogLine(0.1, "bell \x07 here"),
        LogLine(0.2, "from a program", source="user <prog>"),
        DebugEvent(0.3, "module", "loaded sysTest.sys"),
    ]
    text = render_svg(result_with(tmp_path, [], events, 1.0))
    root = ET.fromstring(text)  # would raise on a control character
    assert [g.get("data-source") for g in groups(root, "log")] == ["kernel", "user <prog>"]
    (kd,) = groups(root, "kd")
    assert titles(kd)[-1] == "+0.300s module: loaded sysTest.sys"
    assert "bell \ufffd here" in text


def test_the_html_report_has_the_picture_above_the_steps_table(tmp_path: Path) -> None:
    write_reports([two_drivers_failed_and_crashed(tmp_path)], tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert page.count("<svg") == 1 and page.index("<svg") < page.index("<th>step</th>")
    ET.fromstring(page[page.index("<svg") : page.index("</svg>") + len("</svg>")])


@pytest.mark.parametrize("span", [0.004, 0.3, 1.0, 7.3, 95.0, 600.0, 3600.0])
def test_axis_labels_are_round_seconds_within_the_span(tmp_path: Path, span: float) -> None:
    root = parse(result_with(tmp_path, [], [LogLine(span, "last")], span))
    labels = [t.text or "" for t in root.iter(f"{NS}text") if t.get("class") == "axis-label"]
    values = [float(label.removesuffix("s")) for label in labels]
    assert values[0] == 0 and 4 <= len(values) <= 11 and values[-1] <= span
    assert len(set(labels)) == len(labels)  # enough decimals to tell them apart


@given(
    st.lists(
        st.tuples(st.floats(-5, 1e4, allow_nan=False), st.text(max_size=30), st.sampled_from(["kernel", "com2", "a<b&\"c'"])),
        max_size=40,
    ),
    st.floats(0, 100, allow_nan=False),
)
@example(lines=[], duration=5e-324)  # a span too short for a logarithm
def test_any_log_parses_and_stays_inside_the_plot(lines: list[tuple[float, str, str]], duration: float) -> None:
    result = result_with(Path("."), [], [LogLine(t, text, source) for t, text, source in lines], duration)
    root = parse(result)
    ticks = groups(root, "tick")
    assert sum(int(t.get("data-count", "")) for t in ticks) == len(lines)
    assert all(PLOT_LEFT <= float(t.get("x1", "")) <= PLOT_RIGHT for t in ticks)
