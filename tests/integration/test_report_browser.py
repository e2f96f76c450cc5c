"""The HTML report's timeline seen in a real browser: headless Chromium renders report.html, the test reads the screenshot.

The picture's shapes are found by their exact colours (the SVG draws them with crisp edges) and compared with
where the SVG itself says they are, shifted by wherever the page put the picture.
"""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from harness.reports import write_reports
from harness.reports.svg import CRASH_COLOUR, LOADED_COLOUR, STATE_COLOURS
from tests.timeline_results import two_drivers_failed_and_crashed

pytestmark = pytest.mark.browser

NS = "{http://www.w3.org/2000/svg}"
KERNEL_BLUE = "#1565c0"  # the first log source's colour: kernel
COM2_BROWN = "#6d4c41"  # the second source's


def rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


@dataclass(frozen=True)
class Box:
    left: float
    top: float
    right: float
    bottom: float


def screenshot(page: Path, png: Path, profile: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed; `make test` installs it (scripts/setup-host.sh all)")
    # The flags the machine notes give for headless Chromium as root without a network; one pixel per CSS pixel.
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--user-data-dir={profile}",
        f"--screenshot={png}",
        "--window-size=1200,900",
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0 and png.is_file(), done.stderr[-2000:]


def runs(image: Image.Image, colour: str, region: Box | None = None) -> list[tuple[int, int]]:
    """Every (x, y) of the exact colour, in the region if given."""
    want = rgb(colour)
    width, height = image.size
    box = region or Box(0, 0, width, height)
    return [
        (x, y)
        for y in range(max(0, int(box.top)), min(height, int(box.bottom) + 1))
        for x in range(max(0, int(box.left)), min(width, int(box.right) + 1))
        if image.getpixel((x, y)) == want
    ]


def bands(points: Iterable[tuple[int, int]]) -> list[Box]:
    """Bounding boxes of the point sets that occupy separate rows (one per horizontal bar)."""
    by_row: dict[int, list[int]] = {}
    for x, y in points:
        by_row.setdefault(y, []).append(x)
    boxes: list[Box] = []
    for y in sorted(by_row):
        xs = by_row[y]
        if boxes and boxes[-1].bottom == y - 1:
            last = boxes[-1]
            boxes[-1] = Box(min(last.left, min(xs)), last.top, max(last.right, max(xs)), y)
        else:
            boxes.append(Box(min(xs), y, max(xs), y))
    return boxes


def columns(points: Iterable[tuple[int, int]]) -> list[int]:
    """The x of each group of adjacent columns holding points (one per tick)."""
    xs = sorted({x for x, _ in points})
    groups: list[list[int]] = []
    for x in xs:
        if groups and groups[-1][-1] == x - 1:
            groups[-1].append(x)
        else:
            groups.append([x])
    return [group[0] for group in groups]


def svg_of(page: str) -> ET.Element:
    return ET.fromstring(page[page.index("<svg") : page.index("</svg>") + len("</svg>")])


def rect_box(rect: ET.Element) -> Box:
    x, y = float(rect.get("x", "")), float(rect.get("y", ""))
    return Box(x, y, x + float(rect.get("width", "")), y + float(rect.get("height", "")))


def test_chromium_shows_the_lanes_ticks_failed_step_and_crash(tmp_path: Path) -> None:
    out = tmp_path / "report"
    write_reports([two_drivers_failed_and_crashed(out)], out)
    page = out / "report.html"
    png = tmp_path / "timeline.png"
    screenshot(page, png, tmp_path / "profile")
    image = Image.open(png).convert("RGB")
    assert image.size == (1200, 900)
    svg = svg_of(page.read_text(encoding="utf-8"))

    # The two loaded intervals: bars of the lane colour, one per lane, where and as wide as the SVG says.
    said = [rect_box(r) for r in svg.iter(f"{NS}rect") if r.get("class") == "loaded"]
    seen = bands(runs(image, LOADED_COLOUR))
    assert len(said) == 2 and len(seen) == 2, seen
    dx, dy = seen[0].left - said[0].left, seen[0].top - said[0].top
    assert 0 < dx < 200 and 0 < dy < 900  # the picture is on the first screen, inside its section
    for drawn, shown in zip(said, seen, strict=True):
        assert shown.left - drawn.left == pytest.approx(dx, abs=1.5) and shown.top - drawn.top == pytest.approx(dy, abs=1.5)
        # The crash line is drawn over the bars' right ends.
        assert shown.right + 1 - shown.left == pytest.approx(drawn.right - drawn.left, abs=2.5)
        assert shown.bottom + 1 - shown.top == pytest.approx(drawn.bottom - drawn.top, abs=1.5)

    # The crash: a purple line from the top of the picture down to the axis, at the crash's x.
    (crash,) = [g for g in svg.iter(f"{NS}g") if g.get("class") == "crash"]
    line = crash.find(f"{NS}line")
    assert line is not None
    crash_x, crash_bottom = float(line.get("x1", "")) + dx, float(line.get("y2", "")) + dy
    purple = runs(image, CRASH_COLOUR, Box(crash_x - 3, dy, crash_x + 3, crash_bottom))
    tallest = max((sum(1 for x, _ in purple if x == column), column) for column in {x for x, _ in purple})
    assert tallest[0] >= 0.9 * (crash_bottom - dy) and tallest[1] == pytest.approx(crash_x, abs=1.5)

    # The failed step: a red span in the steps row, where the SVG has it.
    (failed,) = [g for g in svg.iter(f"{NS}g") if (g.get("class") or "").split() == ["step", "failed"]]
    rect = failed.find(f"{NS}rect")
    assert rect is not None
    step = rect_box(rect)
    # The rows of the span only: the failed-step line (red too) runs above and below it.
    inside = Box(step.left + dx - 3, step.top + dy + 1, step.right + dx + 3, step.bottom + dy - 2)
    (red,) = bands(runs(image, STATE_COLOURS["failed"], inside))
    assert red.left == pytest.approx(step.left + dx, abs=1.5) and red.right + 1 == pytest.approx(step.right + dx, abs=1.5)

    # One tick per log line, in each source's colour and row.
    for source, colour, count in (("kernel", KERNEL_BLUE, 6), ("com2", COM2_BROWN, 4)):
        (row,) = [g for g in svg.iter(f"{NS}g") if g.get("data-source") == source]
        ticks = [t for t in row.iter(f"{NS}line") if t.get("class") == "tick"]
        top, bottom = float(ticks[0].get("y1", "")) + dy, float(ticks[0].get("y2", "")) + dy
        shown_x = columns(runs(image, colour, Box(0, top, image.size[0], bottom - 1)))
        said_x = [float(t.get("x1", "")) + dx for t in ticks]
        assert len(shown_x) == len(said_x) == count
        assert shown_x == pytest.approx(said_x, abs=1.5)
