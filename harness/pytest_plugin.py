"""pytest plugin (entry point ``pytest11``): scenario files are test items.

A YAML file is a scenario when it is named on the command line, or when its
path relative to the rootdir matches one of the ``kcb_scenario_files`` ini
globs (default ``scenarios/*.yaml`` and ``scenarios/*.yml``; ``*`` crosses
folders). Each runs on a fresh guest; a bad file is a collection error naming
file:line and field; a failing scenario shows its verdict, the nearby
kernel-log lines and where the raw log is. The run's JUnit XML and HTML
report go to ``--kcb-out`` as with the CLI.

Items run through the suite runner's ``Worker`` (harness.suite): the guest for
pytest's next item starts while the current one runs (``--kcb-no-warm`` turns
that off). Under pytest-xdist (``pytest -n N``) each worker process has lanes
of its own (its own Wine prefixes), every scenario writes its result.json as
it finishes, and the controller writes the one JUnit/HTML report from them.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.config import Settings
from harness.errors import ScenarioError
from harness.guests import open_lanes
from harness.reports import write_reports
from harness.reports.store import load
from harness.reports.timeline import context_line
from harness.runner import ScenarioInterrupted, ScenarioResult
from harness.scenario.loader import SUFFIXES, LoadedScenario, load_scenario
from harness.suite import Item, Worker

_HARNESS = pytest.StashKey["_Session"]()
_RESULT_PROPERTY = "kcb_result"
_RESULTS = pytest.StashKey[list[ScenarioResult]]()


DEFAULT_SCENARIO_FILES = ["scenarios/*.yaml", "scenarios/*.yml"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kcb-harness")
    group.addoption("--kcb-guest", default="wine", help="guest for scenario items (default: wine)")
    group.addoption("--kcb-drivers", type=Path, default=None, help="folder of driver images (default: build/drivers)")
    group.addoption("--kcb-out", type=Path, default=None, help="report folder for scenario items (default: build/pytest-reports)")
    group.addoption("--kcb-config", type=Path, default=None, help="configuration of the libvirt guest (default: harness.yaml)")
    group.addoption("--kcb-no-warm", action="store_true", help="start each guest when its item starts (default: during the one before)")
    parser.addini(
        "kcb_scenario_files",
        "globs (relative to the rootdir; * crosses folders) of YAML files that are kcb-harness scenarios",
        type="linelist",
        default=DEFAULT_SCENARIO_FILES,
    )


class _Session:
    """This process's guests: its lanes (opened at the first scenario item) and the worker that runs items on them."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.settings = _settings(config)
        self.owner = contextlib.ExitStack()
        self.worker: Worker | None = None
        self.result_files: list[Path] = []

    def run(self, item: Item, next_item: Item | None) -> ScenarioResult:
        if self.worker is None:
            lanes = self.owner.enter_context(open_lanes(self.settings))
            warm = not self.config.getoption("--kcb-no-warm") and lanes.capacity is None
            per_worker = 2 if warm else 1
            first = _xdist_worker_number(self.config) * per_worker
            self.worker = Worker(lanes, tuple(range(first, first + per_worker)), self.settings.out_dir, None, self.settings.symbol_dirs)
        return self.worker.run(item, next_item)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
        self.owner.close()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Where each scenario's result.json is (with pytest-xdist this runs in the controller, for every worker's items)."""
        if report.when == "call":
            self.result_files += [Path(str(value)) for name, value in report.user_properties if name == _RESULT_PROPERTY]


def _xdist_worker_number(config: pytest.Config) -> int:
    """0 without pytest-xdist; N for its worker gwN (each worker gets lanes, and so Wine prefixes, of its own)."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        return 0
    return int(str(workerinput["workerid"]).removeprefix("gw"))


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_HARNESS] = session = _Session(config)
    config.pluginmanager.register(session, "kcb-harness-session")
    config.addinivalue_line("markers", "kcb_scenario: a kcb-harness scenario file run on a guest")
    config.addinivalue_line("markers", "wine: runs real drivers on the embedded Wine guest")
    config.addinivalue_line("markers", "libvirt: runs on the libvirt Windows VM guest")


def _settings(config: pytest.Config) -> Settings:
    out = config.getoption("--kcb-out") or Path(str(config.rootpath)) / "build" / "pytest-reports"
    return Settings.defaults(
        guest=config.getoption("--kcb-guest"), drivers_dir=config.getoption("--kcb-drivers"), out_dir=out,
        config=config.getoption("--kcb-config"),
    )  # fmt: skip


def is_scenario_file(path: Path, rootdir: Path, globs: list[str]) -> bool:
    """Whether ``path`` matches one of ``globs`` (relative to ``rootdir``; ``*`` crosses folders)."""
    try:
        relative = path.relative_to(rootdir).as_posix()
    except ValueError:
        return False
    return any(fnmatch.fnmatch(relative, pattern) for pattern in globs)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> ScenarioFile | None:
    if file_path.suffix not in SUFFIXES:
        return None
    config = parent.config
    if parent.session.isinitpath(file_path) or is_scenario_file(file_path, config.rootpath, config.getini("kcb_scenario_files")):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Tell a scenario item which scenario comes next in this process, so its guest can start meanwhile."""
    if isinstance(item, ScenarioItem):
        item.next_scenario = nextitem.suite_item() if isinstance(nextitem, ScenarioItem) else None


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    config.stash[_HARNESS].close()
    if getattr(config, "workerinput", None) is not None:
        return  # an xdist worker: the controller writes the report
    files = config.stash[_HARNESS].result_files
    if files:
        results = [load(path) for path in files if path.is_file()]
        write_reports(sorted(results, key=lambda result: result.key), _settings(config).out_dir)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Close what the guests opened (a VM session's VM), however the run ended."""
    harness = config.stash.get(_HARNESS, None)
    if harness is not None:
        harness.close()


class ScenarioFile(pytest.File):
    """A scenario YAML file: one item."""

    def collect(self) -> Iterator[ScenarioItem]:
        loaded = load_scenario(self.path)
        yield ScenarioItem.from_parent(self, name=loaded.id, loaded=loaded)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, ScenarioError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


class ScenarioFailed(Exception):
    """A scenario item whose run did not pass."""

    def __init__(self, result: ScenarioResult) -> None:
        super().__init__(result.message)
        self.result = result


class ScenarioItem(pytest.Item):
    """One scenario run on a fresh guest."""

    def __init__(self, *, loaded: LoadedScenario, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.loaded = loaded
        self.next_scenario: Item | None = None
        self.add_marker(pytest.mark.kcb_scenario)
        self.add_marker(getattr(pytest.mark, self.config.getoption("--kcb-guest")))

    def suite_item(self) -> Item:
        return Item(self.loaded, _settings(self.config).drivers_dir)

    def runtest(self) -> None:
        __tracebackhide__ = True
        try:
            result = self.config.stash[_HARNESS].run(self.suite_item(), self.next_scenario)
        except ScenarioInterrupted as interrupted:
            self._record(interrupted.result)
            raise
        self._record(result)
        if not result.passed:
            raise ScenarioFailed(result)

    def _record(self, result: ScenarioResult) -> None:
        self.user_properties.append(("outcome", result.outcome))
        self.user_properties.append(("raw_log", str(result.raw_log)))
        self.user_properties.append((_RESULT_PROPERTY, str(result.run_dir / "result.json")))
        if result.signature is not None:
            self.user_properties.append(("signature", result.signature))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, ScenarioFailed):
            return failure_text(excinfo.value.result)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"scenario {self.loaded.id}: {self.loaded.scenario.name}"


def failure_text(result: ScenarioResult) -> str:
    """pytest's text for a scenario that did not pass: the verdict, the log lines near it (each not from the kernel
    log with its source, as the reports show them), where it crashed or hung, and the raw log's path."""
    lines = [f"{result.outcome}: {result.message}"]
    if result.context:
        lines.append("log nearby:")
        lines += [f"  {context_line(line)}" for line in result.context]
    if result.triage is not None:
        lines.append(result.triage.render().rstrip("\n"))
    elif result.signature is not None:
        lines.append(f"signature: {result.signature}")
    lines.append(f"raw kernel log: {result.raw_log}")
    return "\n".join(lines)
