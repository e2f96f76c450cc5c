"""The suite's workers with scripted in-memory guests: infra retried once with the first attempt kept, warm starts,
every guest stopped, reports as items finish, a cancelled suite."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from harness.errors import GuestError
from harness.guests import GuestFactory
from harness.guests.base import Guest
from harness.reports.store import load_dir
from harness.scenario.loader import load_scenario
from harness.suite import ATTEMPT, Suite, expand
from harness.timeline import Timeline
from tests.unit.test_runner import SCENARIO, ScriptedGuest, succeed

LONG = SCENARIO.replace("  - unload: sender\n", "  - wait: 30s\n  - unload: sender\n").replace("timeout: 5s", "timeout: 60s")


class Lanes:
    """Scripted lanes: each guest records its lane; the first guest made on ``broken_lane`` fails to start."""

    capacity: int | None = None
    images: list[str | None] = [None]  # noqa: RUF012

    def __init__(self, broken_lane: int | None = None) -> None:
        self.broken_lane = broken_lane
        self.guests: list[tuple[int, ScriptedGuest]] = []
        self.lock = threading.Lock()

    def factory(self, lane: int, image: str | None) -> GuestFactory:
        def make(timeline: Timeline, run_dir: Path) -> Guest:
            with self.lock:
                broken = lane == self.broken_lane and not any(number == lane for number, _ in self.guests)
                guest = BrokenGuest(timeline, run_dir, succeed) if broken else self.guest(timeline, run_dir)
                self.guests.append((lane, guest))
            return guest

        return make

    def guest(self, timeline: Timeline, run_dir: Path) -> ScriptedGuest:
        return ScriptedGuest(timeline, run_dir, succeed)


class BrokenGuest(ScriptedGuest):
    def start(self) -> None:
        raise GuestError("the guest broke while starting")


def items(tmp_path: Path, count: int, text: str = SCENARIO) -> list:  # type: ignore[type-arg]
    drivers = tmp_path / "drivers"
    drivers.mkdir(parents=True, exist_ok=True)
    (drivers / "sender.sys").write_bytes(b"MZ")
    scenarios = []
    for index in range(count):
        path = tmp_path / f"case-{index}.yaml"
        path.write_text(text)
        scenarios.append(load_scenario(path))
    return expand(scenarios, {None: drivers})


def test_infra_is_run_once_more_and_the_first_attempt_is_kept(tmp_path: Path) -> None:
    lanes = Lanes(broken_lane=0)
    outcome = Suite(items(tmp_path, 1), lanes, tmp_path / "out", jobs=1, warm=False).run()
    assert [r.outcome for r in outcome.results] == ["passed"]
    kept = tmp_path / "out" / "scenarios" / "case-0" / ATTEMPT
    assert "the guest broke while starting" in (kept / "result.json").read_text()
    assert [r.outcome for r in load_dir(tmp_path / "out")] == ["passed"]  # the report counts the retry's result


def test_warm_workers_start_every_guest_once_and_stop_them_all(tmp_path: Path) -> None:
    lanes = Lanes()
    outcome = Suite(items(tmp_path, 5), lanes, tmp_path / "out", jobs=2, warm=True).run()
    assert [r.outcome for r in outcome.results] == ["passed"] * 5
    assert len(lanes.guests) == 5 and all(guest.started and guest.stopped for _, guest in lanes.guests)
    assert {lane for lane, _ in lanes.guests} == {0, 1, 2, 3}  # two workers, two lanes each
    assert (tmp_path / "out" / "junit.xml").is_file() and len(load_dir(tmp_path / "out")) == 5


def test_a_cancelled_suite_tears_down_running_and_early_started_guests(tmp_path: Path) -> None:
    lanes = Lanes()
    suite = Suite(items(tmp_path, 3, LONG), lanes, tmp_path / "out", jobs=1, warm=True)
    threading.Timer(1.0, suite.cancel, args=("test",)).start()
    outcome = suite.run()
    assert [r.message.startswith("interrupted") for r in outcome.results] == [True]
    assert outcome.cut_short == (outcome.results[0].key,)  # by the suite, not by the words of the message
    assert lanes.guests and all(guest.stopped for _, guest in lanes.guests)  # the running one and the one started early


def test_every_worker_gets_an_item_though_each_takes_its_next_early(tmp_path: Path) -> None:
    lanes = Lanes()
    suite = Suite(items(tmp_path, 2, LONG.replace("wait: 30s", "wait: 1s")), lanes, tmp_path / "out", jobs=2, warm=True)
    outcome = suite.run()
    assert [r.outcome for r in outcome.results] == ["passed", "passed"]
    # Two items, two workers: they ran at the same time (each on a lane of its own worker), not one after the other.
    starts = sorted(r.started_at for r in outcome.results)
    assert starts[1] - starts[0] < min(r.duration for r in outcome.results)
    assert {lane for lane, _ in lanes.guests} == {0, 2}


class OneAtATimeGuest(ScriptedGuest):
    """Records a lane hosting two guests at once (as one Wine prefix or one VM cannot)."""

    active: dict[int, int] = {}  # noqa: RUF012 - lane -> guests up on it
    clashes: list[int] = []  # noqa: RUF012

    def __init__(self, timeline: Timeline, run_dir: Path, lane: int, broken: bool) -> None:
        super().__init__(timeline, run_dir, succeed)
        self.lane, self.broken = lane, broken

    def start(self) -> None:
        up = OneAtATimeGuest.active.get(self.lane, 0) + 1
        OneAtATimeGuest.active[self.lane] = up
        if up > 1:
            OneAtATimeGuest.clashes.append(self.lane)
        super().start()
        if self.broken:
            raise GuestError("the guest broke while starting")

    def stop(self) -> None:
        if not self.stopped and self.started:
            OneAtATimeGuest.active[self.lane] -= 1
        super().stop()


def test_an_infra_retry_runs_on_its_own_lane_while_the_next_guest_starts_on_the_other(tmp_path: Path) -> None:
    made: list[OneAtATimeGuest] = []

    class RetryLanes(Lanes):
        def factory(self, lane: int, image: str | None) -> GuestFactory:
            def make(timeline: Timeline, run_dir: Path) -> Guest:
                made.append(OneAtATimeGuest(timeline, run_dir, lane, broken=not made))
                return made[-1]

            return make

    OneAtATimeGuest.active, OneAtATimeGuest.clashes = {}, []
    outcome = Suite(items(tmp_path, 3), RetryLanes(), tmp_path / "out", jobs=1, warm=True).run()
    assert [r.outcome for r in outcome.results] == ["passed"] * 3
    assert OneAtATimeGuest.clashes == [] and all(guest.stopped for guest in made)
    assert (tmp_path / "out" / "scenarios" / "case-0" / ATTEMPT).is_dir()


class SlowStartGuest(ScriptedGuest):
    """Takes 0.3 s to start and logs when its start begins and ends."""

    def __init__(self, timeline: Timeline, run_dir: Path, log: list[str]) -> None:
        super().__init__(timeline, run_dir, succeed)
        self.starts = log

    def start(self) -> None:
        self.starts.append(f"begin {self.run_dir.name}")
        time.sleep(0.3)
        self.starts.append(f"end {self.run_dir.name}")
        super().start()


class SlowStartLanes(Lanes):
    def __init__(self) -> None:
        super().__init__()
        self.log: list[str] = []

    def guest(self, timeline: Timeline, run_dir: Path) -> ScriptedGuest:
        return SlowStartGuest(timeline, run_dir, self.log)


def test_the_next_guest_starts_once_the_running_items_guest_is_up(tmp_path: Path) -> None:
    # At a suite's start each worker starts its first guest, which an item waits for, and the next one, which nobody
    # waits for yet: the second must not take CPU from the first (four Wine starts on two cores made -j 2 slower).
    lanes = SlowStartLanes()
    outcome = Suite(items(tmp_path, 3), lanes, tmp_path / "out", jobs=1, warm=True).run()
    assert [r.outcome for r in outcome.results] == ["passed"] * 3
    assert lanes.log == ["begin case-0", "end case-0", "begin case-1", "end case-1", "begin case-2", "end case-2"]


def test_a_next_guest_does_not_wait_for_a_guest_its_item_never_started(tmp_path: Path) -> None:
    # An item that ends before its guest starts (here a driver file that is missing) must still let the next one start.
    lanes = SlowStartLanes()
    items(tmp_path, 2)  # drivers/sender.sys, case-0.yaml, case-1.yaml
    (tmp_path / "case-0.yaml").write_text(SCENARIO.replace("sender", "absent"))  # now needs absent.sys
    listed = expand([load_scenario(tmp_path / f"case-{n}.yaml") for n in (0, 1)], {None: tmp_path / "drivers"})
    outcome = Suite(listed, lanes, tmp_path / "out", jobs=1, warm=True).run()
    assert [r.outcome for r in outcome.results] == ["error", "passed"]
    assert lanes.log == ["begin case-1", "end case-1"]
