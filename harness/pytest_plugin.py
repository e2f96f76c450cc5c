"""pytest plugin (entry point ``pytest11``): scenario files are test items.

A YAML file is a scenario when it is named on the command line, or when its
path relative to the rootdir matches one of the ``kcb_scenario_files`` ini
globs (default ``scenarios/*.yaml`` and ``scenarios/*.yml``; ``*`` crosses
folders). Each runs on a fresh guest; a bad file is a collection error naming
file:line and field; a failing scenario shows its verdict, the nearby
kernel-log lines and where the raw log is. The run's JUnit XML and HTML
report go to ``--kcb-out`` as with the CLI.
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
from harness.guests import GuestFactory, open_guests
from harness.reports import write_reports
from harness.runner import ScenarioInterrupted, ScenarioResult, run_scenario
from harness.scenario.loader import SUFFIXES, LoadedScenario, load_scenario

_FACTORY = pytest.StashKey[GuestFactory]()
_OWNER = pytest.StashKey[contextlib.ExitStack]()
_RESULTS = pytest.StashKey[list[ScenarioResult]]()


DEFAULT_SCENARIO_FILES = ["scenarios/*.yaml", "scenarios/*.yml"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kcb-harness")
    group.addoption("--kcb-guest", default="wine", help="guest for scenario items (default: wine)")
    group.addoption("--kcb-drivers", type=Path, default=None, help="folder of driver images (default: build/drivers)")
    group.addoption("--kcb-out", type=Path, default=None, help="report folder for scenario items (default: build/pytest-reports)")
    parser.addini(
        "kcb_scenario_files",
        "globs (relative to the rootdir; * crosses folders) of YAML files that are kcb-harness scenarios",
        type="linelist",
        default=DEFAULT_SCENARIO_FILES,
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RESULTS] = []
    config.stash[_OWNER] = contextlib.ExitStack()
    config.addinivalue_line("markers", "kcb_scenario: a kcb-harness scenario file run on a guest")
    config.addinivalue_line("markers", "wine: runs real drivers on the embedded Wine guest")
    config.addinivalue_line("markers", "libvirt: runs on the libvirt Windows VM guest")


def _settings(config: pytest.Config) -> Settings:
    out = config.getoption("--kcb-out") or Path(str(config.rootpath)) / "build" / "pytest-reports"
    return Settings.defaults(guest=config.getoption("--kcb-guest"), drivers_dir=config.getoption("--kcb-drivers"), out_dir=out)


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


def pytest_sessionfinish(session: pytest.Session) -> None:
    results = session.config.stash.get(_RESULTS, [])
    if results:
        write_reports(results, _settings(session.config).out_dir)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Close what the guests opened (a VM session's VM), however the run ended."""
    owner = config.stash.get(_OWNER, None)
    if owner is not None:
        owner.close()


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
        self.add_marker(pytest.mark.kcb_scenario)
        self.add_marker(getattr(pytest.mark, self.config.getoption("--kcb-guest")))

    def runtest(self) -> None:
        __tracebackhide__ = True
        config = self.config
        settings = _settings(config)
        if _FACTORY not in config.stash:
            config.stash[_FACTORY] = config.stash[_OWNER].enter_context(open_guests(settings))
        try:
            result = run_scenario(self.loaded, config.stash[_FACTORY], settings.drivers_dir, settings.out_dir)
        except ScenarioInterrupted as interrupted:
            config.stash[_RESULTS].append(interrupted.result)
            raise
        config.stash[_RESULTS].append(result)
        self.user_properties.append(("outcome", result.outcome))
        self.user_properties.append(("raw_log", str(result.raw_log)))
        if result.signature is not None:
            self.user_properties.append(("signature", result.signature))
        if not result.passed:
            raise ScenarioFailed(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, ScenarioFailed):
            result = excinfo.value.result
            lines = [f"{result.outcome}: {result.message}"]
            if result.context:
                lines.append("kernel log nearby:")
                lines += [f"  +{line.t:.3f}s {line.text}" for line in result.context]
            if result.triage is not None:
                lines.append(result.triage.render().rstrip("\n"))
            elif result.signature is not None:
                lines.append(f"signature: {result.signature}")
            lines.append(f"raw kernel log: {result.raw_log}")
            return "\n".join(lines)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"scenario {self.loaded.id}: {self.loaded.scenario.name}"
