"""The suite runner that ``harness run``, ``compare`` and the pytest plugin share.

An *item* is one scenario with one driver build on one image. Items go to
*workers* (``-j``), each with its own guests: a worker owns *lanes*, places
where one guest can run at a time (a Wine prefix, a VM). With ``warm``, a
worker has two lanes: while a scenario runs on one, the guest for the
worker's next item starts on the other, and each guest is torn down in the
background while the next scenario runs, so start and teardown cost little
wall time. An ``infra`` outcome is run once more on a fresh guest. Each
item's ``result.json`` and the suite's JUnit/HTML reports are written as it
finishes. Ctrl-C or SIGTERM (in the main thread) cancels every running
scenario (their guests are torn down, their results say "interrupted"),
ends guests that were started early, and waits for every teardown.

``runner.py`` stays the engine of one scenario; this module only schedules.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from harness.errors import ConfigError
from harness.guests import GuestFactory
from harness.reports import write_reports
from harness.reports.store import save
from harness.runner import ScenarioInterrupted, ScenarioResult, SetUp, run_set_up, set_up
from harness.scenario.loader import LoadedScenario

log = logging.getLogger(__name__)

#: Where an item's first attempt is kept when it was run once more after an infra outcome.
ATTEMPT = "attempt-1"


@dataclass(frozen=True)
class Item:
    """One scenario run: the scenario, the driver build it uses and the image it runs on (None: the only one)."""

    scenario: LoadedScenario
    drivers_dir: Path
    image: str | None = None
    build: str | None = None

    @property
    def key(self) -> str:
        """Unique within a suite: ``<scenario>[@<image>][@<build>]`` (also its folder under scenarios/)."""
        return "@".join(part for part in (self.scenario.id, self.image, self.build) if part)


def expand(scenarios: Sequence[LoadedScenario], builds: Mapping[str | None, Path], images: Sequence[str | None] = (None,)) -> list[Item]:
    """Every build × scenario × image, in that order. Pure."""
    return [Item(scenario, drivers, image, build) for build, drivers in builds.items() for scenario in scenarios for image in images]


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` (1 <= K <= N) as (K, N).

    Raises:
        ConfigError: anything else.
    """
    first, _, second = text.partition("/")
    if not (first.isdigit() and second.isdigit()) or not 1 <= int(first) <= int(second):
        raise ConfigError(f"--shard {text!r}: expected K/N with 1 <= K <= N, e.g. 1/4")
    return int(first), int(second)


def select_shard(items: Sequence[Item], shard: int, shards: int) -> list[Item]:
    """The items of shard ``shard`` of ``shards``: by the order of their keys, every ``shards``-th, starting at ``shard``.

    Deterministic (the same items give the same shards on every machine) and balanced to one item. Pure.
    """
    ranked = sorted(range(len(items)), key=lambda index: items[index].key)
    chosen = {index for position, index in enumerate(ranked) if position % shards == shard - 1}
    return [item for index, item in enumerate(items) if index in chosen]


class Lanes(Protocol):
    """Where guests run: lane ``n`` hosts one guest at a time (a Wine prefix of its own, a VM of its own)."""

    #: How many lanes there can be (None: as many as wanted).
    capacity: int | None
    #: The images items can run on (None: the guest's only one).
    images: list[str | None]

    def factory(self, lane: int, image: str | None) -> GuestFactory:
        """The guest factory of lane ``lane`` for items on ``image``.

        Raises:
            GuestError: the lane cannot be made (a prefix clone, a VM).
            ConfigError: no such image.
        """


class _Lane:
    """One lane's guest teardowns: at most one in flight, waited for before the lane's next guest starts."""

    def __init__(self) -> None:
        self._teardown: threading.Thread | None = None

    def stop_later(self, stop: Callable[[], None]) -> None:
        self.wait_idle()
        self._teardown = threading.Thread(target=stop, daemon=True, name="guest-teardown")
        self._teardown.start()

    def wait_idle(self) -> None:
        if self._teardown is not None:
            self._teardown.join()
            self._teardown = None


@dataclass
class Worker:
    """Runs items one after another on its own lanes (two with ``warm``: the next guest starts during the current item).

    The suite gives each worker thread one; the pytest plugin uses one per process, with pytest's ``nextitem``.
    """

    lanes: Lanes
    numbers: tuple[int, ...]  # the lanes this worker owns
    out_dir: Path
    progress: Callable[[str], None] | None = None
    symbol_dirs: tuple[Path, ...] = ()  # more folders with the drivers' symbol files
    _turn: int = 0
    _pending: tuple[Item, SetUp, int] | None = None  # the next item, set up (its guest starting) on that lane
    _lanes: dict[int, _Lane] = field(default_factory=dict)
    current: SetUp | None = None  # the item running now (the suite cancels its timeline)

    def run(self, item: Item, next_item: Item | None = None) -> ScenarioResult:
        """Run ``item`` (its guest perhaps started already); start ``next_item``'s guest meanwhile, when warm.

        Raises:
            ScenarioInterrupted: Ctrl-C, SIGTERM, or the suite cancelled it (its result is in the exception).
        """
        if self._pending is not None and self._pending[0] == item:
            prepared, number = self._pending[1], self._pending[2]
            self._pending = None
        else:
            self.discard_pending()
            number = self._next_lane()
            prepared = self._prepare(item, number, early=False)
        if next_item is not None and len(self.numbers) > 1:
            other = self._next_lane()
            first = prepared.guest.start_settled if prepared.guest is not None else None
            self._pending = (next_item, self._prepare(next_item, other, early=True, after=first), other)
        self.current = prepared
        try:
            result = run_set_up(prepared, self.progress)
            if result.outcome == "infra":
                log.warning("%s: %s; running it once more on a fresh guest", item.key, result.message)
                if self.progress is not None:
                    self.progress(f"INFRA {item.key}: {result.message}; retrying once")
                self._lanes[number].wait_idle()  # the first attempt's guest is down: its logs are complete
                self._keep_attempt(result)
                # On the same lane: the other may be starting the next item's guest.
                self.current = retry = self._prepare(item, number, early=False)
                result = run_set_up(retry, self.progress)
        except ScenarioInterrupted as interrupted:
            self._finish(item, interrupted.result)
            raise
        finally:
            self.current = None
            if prepared.guest is not None:
                prepared.guest.start_settled.set()  # a guest the item never started: the next one need not wait for it
        return self._finish(item, result)

    @staticmethod
    def _keep_attempt(result: ScenarioResult) -> None:
        """Keep the first attempt's files (its raw log is evidence of what broke) in ``attempt-1/`` of its folder."""
        save(result)
        kept = result.run_dir / ATTEMPT
        kept.mkdir(exist_ok=True)
        for path in result.run_dir.iterdir():
            if path != kept:
                path.rename(kept / path.name)

    def _next_lane(self) -> int:
        number = self.numbers[self._turn % len(self.numbers)]
        self._turn += 1
        return number

    def _prepare(self, item: Item, number: int, early: bool, after: threading.Event | None = None) -> SetUp:
        """Set ``item`` up on lane ``number``; with ``early`` its guest starts now in the background, once the lane's
        last teardown is done and ``after`` is set (the running item's guest is up)."""
        lane = self._lanes.setdefault(number, _Lane())
        factory = self.lanes.factory(number, item.image)
        prepared = set_up(item.scenario, factory, item.drivers_dir, self.out_dir / "scenarios" / item.key, self.symbol_dirs)
        if prepared.guest is not None:
            prepared.guest.stop_later = lane.stop_later
            if early:

                def ready() -> None:
                    lane.wait_idle()
                    if after is not None:
                        after.wait()

                prepared.guest.start_early(after=ready)
            else:
                lane.wait_idle()
        return prepared

    def _finish(self, item: Item, result: ScenarioResult) -> ScenarioResult:
        result.image, result.build = item.image, item.build
        save(result)
        return result

    def discard_pending(self) -> None:
        """End a guest started early for an item that will not run here (or not next)."""
        if self._pending is not None:
            guest = self._pending[1].guest
            self._pending = None
            if guest is not None:
                guest.discard()

    def close(self) -> None:
        """End what was started early and wait for every teardown of this worker's guests."""
        self.discard_pending()
        for lane in self._lanes.values():
            lane.wait_idle()


@dataclass
class SuiteResult:
    results: list[ScenarioResult]
    interrupted: str | None = None  # why, when Ctrl-C or SIGTERM ended the suite
    cut_short: tuple[str, ...] = ()  # the keys of the items that the interruption ended before they finished


class Suite:
    """Items on ``jobs`` workers; reports written as each item finishes."""

    def __init__(
        self,
        items: Sequence[Item],
        lanes: Lanes,
        out_dir: Path,
        jobs: int = 1,
        warm: bool = True,
        progress: Callable[[str], None] | None = None,
        verbose: bool = False,
        symbol_dirs: Sequence[Path] = (),
        history: Mapping[str, float] | None = None,
    ) -> None:
        self.items = list(items)
        self.lanes = lanes
        self.out_dir = out_dir
        capacity = lanes.capacity
        self.jobs = max(1, min(jobs, len(self.items) or 1, capacity or jobs))
        # Warm needs a second lane per worker.
        self.warm = warm and (capacity is None or capacity >= 2 * self.jobs)
        self.progress = progress
        self.verbose = verbose
        self.symbol_dirs = tuple(symbol_dirs)
        self.history = dict(history or {})  # seconds each item took last time: the longest are handed out first
        self._queue: queue.Queue[int] = queue.Queue()
        self._results: dict[int, ScenarioResult] = {}
        self._lock = threading.Lock()
        self._cancelled: str | None = None
        self._interrupted = False  # by Ctrl-C or SIGTERM (not by a worker that failed)
        self._workers: list[Worker] = []
        self._failures: list[BaseException] = []
        self._cut_short: set[int] = set()

    def run(self) -> SuiteResult:
        """Run every item. Ctrl-C or SIGTERM in the calling (main) thread ends it cleanly (``SuiteResult.interrupted``).

        Raises:
            GuestError, ConfigError: a worker could not set up its guests (after the others stopped).
        """
        for index in longest_first(self.items, self.history):
            self._queue.put(index)
        per_worker = 2 if self.warm else 1
        self._workers = [
            Worker(
                self.lanes,
                tuple(range(n * per_worker, (n + 1) * per_worker)),
                self.out_dir,
                self.progress if self.verbose else None,
                self.symbol_dirs,
            )  # fmt: skip
            for n in range(self.jobs)
        ]
        # Each worker says when it has finished (its guests torn down). Not Thread.join: a join that Ctrl-C
        # interrupts can leave the thread looking finished in CPython 3.11 (gh-90882), and the run would end early.
        finished = [threading.Event() for _ in self._workers]
        # Each worker's first item is handed out before any starts, so a worker that takes its next item early (to
        # start its guest meanwhile) cannot leave another with nothing.
        first = [self._next() for _ in self._workers]
        threads = [
            threading.Thread(target=self._work, args=(worker, start, done), name=f"suite-worker-{n}")
            for n, (worker, start, done) in enumerate(zip(self._workers, first, finished, strict=True))
        ]
        for thread in threads:
            thread.start()
        try:
            for done in finished:
                while not done.wait(0.2):  # short waits: Ctrl-C and SIGTERM reach this (main) thread between them
                    pass
        except KeyboardInterrupt as signal:
            self._interrupted = True
            self.cancel(str(signal) or "Ctrl-C")
            for done in finished:
                done.wait()
        self._write_reports()
        if self._failures and not self._interrupted:
            raise self._failures[0]
        with self._lock:
            cut_short = tuple(self.items[index].key for index in sorted(self._cut_short))
        return SuiteResult(self.results(), self._cancelled, cut_short)

    def cancel(self, reason: str) -> None:
        """Stop handing out items and cancel the running ones (their guests are torn down by their workers)."""
        self._cancelled = reason
        for worker in self._workers:
            current = worker.current
            if current is not None:
                current.timeline.cancel(reason)

    def results(self) -> list[ScenarioResult]:
        with self._lock:
            return [self._results[index] for index in sorted(self._results)]

    def _next(self) -> int | None:
        if self._cancelled is not None:
            return None
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None

    def _work(self, worker: Worker, index: int | None, finished: threading.Event) -> None:
        try:
            following = self._next() if index is not None else None
            while index is not None and self._cancelled is None:
                item = self.items[index]
                if self.progress is not None:
                    self.progress(f"RUN  {item.key}: {item.scenario.scenario.name}")
                try:
                    result = worker.run(item, self.items[following] if following is not None else None)
                except ScenarioInterrupted as interrupted:
                    with self._lock:
                        self._cut_short.add(index)
                    self._done(index, interrupted.result)
                    break
                self._done(index, result)
                index, following = following, self._next()
        except BaseException as error:  # a lane that cannot be set up: stop the others, report it from run()
            log.debug("suite worker failed", exc_info=True)
            with self._lock:
                self._failures.append(error)
            self.cancel(f"a worker failed: {error}")
        finally:
            try:
                worker.close()
            finally:
                finished.set()

    def _done(self, index: int, result: ScenarioResult) -> None:
        with self._lock:
            self._results[index] = result
        if self.progress is not None:
            for line in verdict_lines(result):
                self.progress(line)
        self._write_reports()

    def _write_reports(self) -> None:
        with self._lock:
            results = [self._results[index] for index in sorted(self._results)]
            write_reports(results, self.out_dir)


def verdict_lines(result: ScenarioResult) -> list[str]:
    """The console's lines for a finished item: its verdict, and on a crash or hang its signature and where it happened."""
    mark = "PASS" if result.passed else result.outcome.upper()
    lines = [f"{mark:<4} {result.key} ({result.duration:.2f}s){': ' + result.message if result.message else ''}"]
    if result.signature is not None:
        lines.append(f"     signature {result.signature}")
        culprit = result.triage.culprit if result.triage is not None else None
        if result.triage is not None and culprit is not None:
            lines.append(f"     at {culprit.describe()}")
            lines.append(f"     stack: {result.triage.chain()}")
    return lines


def longest_first(items: Sequence[Item], history: Mapping[str, float]) -> list[int]:
    """The order to hand items out in: longest first by their last duration (unknown ones first of all), so the
    workers finish together (the longest-processing-time rule). Stable, and the same on every machine. Pure."""
    return sorted(range(len(items)), key=lambda index: -history.get(items[index].key, float("inf")))


def busy_time(result: ScenarioResult) -> float:
    """How long an item kept its worker: from its first step (its guest up) to its end. (Its timeline may begin
    earlier: a warm pool sets up the next item while the one before runs.)"""
    ran = [step for step in result.steps if step.state != "skipped"]
    return result.duration - ran[0].start if ran else result.duration


def load_history(path: Path) -> dict[str, float]:
    """Item durations of earlier runs (``save_history``); empty when there are none or the file is unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(key): float(value) for key, value in data.items() if isinstance(value, int | float)} if isinstance(data, dict) else {}


def save_history(path: Path, results: Sequence[ScenarioResult]) -> None:
    """Remember how long each item took (merged into what was remembered), for the next run's ``longest_first``."""
    history = load_history(path)
    history.update({result.key: round(busy_time(result), 3) for result in results if busy_time(result) > 0})
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(history, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    temporary.replace(path)
