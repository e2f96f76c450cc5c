"""The embedded guest for real: the compiled drivers under Wine with the callback shim."""

from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path

import pytest

from harness.config import Settings
from harness.guests import GuestFactory
from harness.guests.base import Guest
from harness.guests.wine.guest import WineGuest
from harness.guests.wine.prefix import WinePrefix
from harness.kernel.events import LogLine
from harness.runner import ScenarioResult, run_scenario
from harness.scenario.loader import load_scenario
from harness.timeline import Timeline
from tests.integration.conftest import DATA, ROOT

pytestmark = [pytest.mark.wine, pytest.mark.usefixtures("no_session_left")]

NOTIFY = "[sysRecv1]:get notify ulType:(1)\tulValue:(hello)"


def run(path: Path, factory: GuestFactory, drivers: Path, out: Path) -> ScenarioResult:
    return run_scenario(load_scenario(path), factory, drivers, out)


def test_receiver_first_fails_with_the_drivers_own_status(wine_factory: GuestFactory, settings: Settings, tmp_path: Path) -> None:
    result = run(ROOT / "scenarios" / "02-receiver-before-sender.yaml", wine_factory, settings.drivers_dir, tmp_path)
    assert result.outcome == "passed", result.message
    assert result.steps[0].message == "STATUS_OBJECT_NAME_NOT_FOUND (0xC0000034)"
    raw = result.raw_log.read_text()
    assert "[sysRecv1] ExCreateCallback error code:(0xc0000034)." in raw
    assert NOTIFY in raw


def test_wrong_expectation_fails_and_shows_what_was_seen(wine_factory: GuestFactory, settings: Settings, tmp_path: Path) -> None:
    result = run(DATA / "failing" / "wrong-expectation.yaml", wine_factory, settings.drivers_dir, tmp_path)
    assert result.outcome == "failed"
    assert "ulType:(2)" in result.message and "saw 0" in result.message
    assert NOTIFY in [line.text for line in result.context]


def test_missing_driver_image_is_an_error(wine_factory: GuestFactory, settings: Settings, tmp_path: Path) -> None:
    result = run(DATA / "failing" / "missing-driver.yaml", wine_factory, settings.drivers_dir, tmp_path)
    assert result.outcome == "error" and "ghost.sys" in result.message


def test_wrong_status_names_the_real_status(wine_factory: GuestFactory, settings: Settings, tmp_path: Path) -> None:
    result = run(DATA / "failing" / "wrong-status.yaml", wine_factory, settings.drivers_dir, tmp_path)
    assert result.outcome == "failed"
    assert "expected STATUS_SUCCESS (0x00000000), got STATUS_OBJECT_NAME_NOT_FOUND (0xC0000034)" in result.message


def test_crashing_driver_is_reported_as_a_crash(wine_factory: GuestFactory, settings: Settings, tmp_path: Path) -> None:
    buggy = settings.build_dir / "drivers-seeded-bug"
    result = run(DATA / "failing" / "unload-without-unregister.yaml", wine_factory, buggy, tmp_path)
    assert result.outcome == "crashed", result.message
    assert result.crash is not None and result.crash.code == 0xC0000005
    assert result.crash.parameters[0] == 8  # execute access: the unloaded receiver's routine
    assert "Unhandled page fault" in result.crash.evidence[0]
    assert "[sysRecv1] Drvier unloaded." in [line.text for line in result.context]
    assert "Unhandled page fault" in result.raw_log.read_text()


def test_the_same_scenario_passes_with_the_fixed_receiver(wine_factory: GuestFactory, settings: Settings, tmp_path: Path) -> None:
    result = run(DATA / "failing" / "unload-without-unregister.yaml", wine_factory, settings.drivers_dir, tmp_path)
    assert result.outcome == "passed", result.message


@pytest.mark.parametrize(
    ("scenario", "why"),
    [
        ("09-callback-object-semantics.yaml", "the probe's checks fail on Wine's stubs"),
        ("02-receiver-before-sender.yaml", "receiver-first wrongly succeeds on Wine's stubs"),
    ],
)
def test_scenarios_fail_on_stock_wine_without_the_shim(
    wine_prefix: WinePrefix, settings: Settings, tmp_path: Path, scenario: str, why: str
) -> None:
    def stock(timeline: Timeline, run_dir: Path) -> Guest:
        return WineGuest(timeline, run_dir, wine_prefix, shim=False)

    result = run(ROOT / "scenarios" / scenario, stock, settings.drivers_dir, tmp_path)
    assert result.outcome == "failed", why


def test_each_scenario_gets_a_fresh_kernel(wine_factory: GuestFactory, settings: Settings, tmp_path: Path) -> None:
    # The sender leaves \Callback\driverStart behind (OBJ_PERMANENT); the next scenario must not see it.
    first = run(ROOT / "scenarios" / "08-permanent-object-outlives-sender.yaml", wine_factory, settings.drivers_dir, tmp_path / "a")
    second = run(DATA / "failing" / "wrong-status.yaml", wine_factory, settings.drivers_dir, tmp_path / "b")
    assert first.outcome == "passed", first.message
    assert "got STATUS_OBJECT_NAME_NOT_FOUND" in second.message


def test_a_driver_entry_that_never_returns_is_a_hang(wine_factory: GuestFactory, settings: Settings, tmp_path: Path) -> None:
    result = run(DATA / "failing" / "stalled-driver-entry.yaml", wine_factory, settings.drivers_dir, tmp_path)
    assert result.outcome == "hung", result.message
    assert result.steps[0].state == "hung" and "did not answer 'start kcbStall'" in result.message
    assert "[stall] DriverEntry stalls for 600000 ms." in result.raw_log.read_text()


def test_notifying_a_system_defined_object_is_warned_about(wine_factory: GuestFactory, settings: Settings, tmp_path: Path) -> None:
    """ExNotifyCallback's documentation forbids it; Windows still calls the routines, and so does the shim, with a warning."""
    result = run(DATA / "failing" / "notify-system-object.yaml", wine_factory, settings.drivers_dir, tmp_path)
    assert result.outcome == "failed", result.message
    assert result.steps[1].state == "passed"  # the routine registered on \Callback\PowerState was called once
    assert result.steps[2].state == "failed" and "kcb-shim: warning: ExNotifyCallback" in result.message
    assert "kcb-shim: warning: ExNotifyCallback on the system-defined callback object \\Callback\\PowerState" in result.raw_log.read_text()


def prefix_contents(prefix: WinePrefix) -> dict[str, str]:
    """Every regular file of a prefix and its SHA-256 (what a clone's sessions must never change)."""
    return {
        str(path.relative_to(prefix.root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in prefix.root.rglob("*")
        if path.is_file() and not path.is_symlink()
    }


def test_clones_run_sessions_beside_each_other_and_never_change_their_base(
    wine_prefix: WinePrefix, settings: Settings, tmp_path: Path
) -> None:
    before = prefix_contents(wine_prefix)
    clones = [wine_prefix.clone(90), wine_prefix.clone(91)]
    scenario = load_scenario(ROOT / "scenarios" / "05-two-receivers.yaml")
    results: list[ScenarioResult] = []

    def one(prefix: WinePrefix, name: str) -> None:
        factory: GuestFactory = lambda timeline, run_dir: WineGuest(timeline, run_dir, prefix)  # noqa: E731
        results.append(run_scenario(scenario, factory, settings.drivers_dir, tmp_path / name))

    threads = [threading.Thread(target=one, args=(prefix, f"clone-{i}")) for i, prefix in enumerate(clones)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [r.outcome for r in results] == ["passed", "passed"], [r.message for r in results]
    # The two sessions overlapped: each session's kernel log is its own, with its own drivers' lines.
    for result in results:
        assert sum("get notify" in line.text for line in result.events if isinstance(line, LogLine)) >= 3
    assert prefix_contents(wine_prefix) == before
    for clone in clones:
        assert clone.session_pids() == []


def test_a_session_starts_none_of_wines_usb_and_hid_bus_drivers(wine_factory: GuestFactory, settings: Settings, tmp_path: Path) -> None:
    """They serve the host's hardware, which no scenario uses; wineusb's was seen to fault while a session started."""
    result = run(ROOT / "scenarios" / "03-no-receiver.yaml", wine_factory, settings.drivers_dir, tmp_path)
    assert result.outcome == "passed", result.message
    loaded = dict(re.findall(r"kcb-shim: load (\S+) status 0x([0-9a-f]{8})", result.raw_log.read_text()))
    assert loaded.get("kcbanchor") == loaded.get("sysTest") == "00000000", loaded
    assert all(loaded.get(driver, "none") != "00000000" for driver in ("winebus", "wineusb")), loaded  # refused, or not tried
