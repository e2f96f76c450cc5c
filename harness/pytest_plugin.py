"""pytest plugin: every scenario file under a ``scenarios`` folder is a test item.

``pytest scenarios/`` (or one file) runs each scenario on a fresh guest; a
bad file is a collection error naming file:line and field; a failing scenario
shows its verdict, the nearby kernel-log lines and where the raw log is. The
run's JUnit XML and HTML report go to ``--kcb-out`` as with the CLI.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.config import Settings
from harness.errors import ScenarioError
from harness.guests import GuestFactory, guest_factory
from harness.reports import write_reports
from harness.runner import ScenarioResult, run_scenario
from harness.scenario.loader import SUFFIXES, LoadedScenario, load_scenario

_FACTORY = pytest.StashKey[GuestFactory]()
_RESULTS = pytest.StashKey[list[ScenarioResult]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kcb-harness")
    group.addoption("--kcb-guest", default="wine", help="guest for scenario items (default: wine)")
    group.addoption("--kcb-drivers", type=Path, default=None, help="folder of driver images (default: build/drivers)")
    group.addoption("--kcb-out", type=Path, default=None, help="report folder for scenario items (default: build/pytest-reports)")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RESULTS] = []


def _settings(config: pytest.Config) -> Settings:
    out = config.getoption("--kcb-out") or Path(str(config.rootpath)) / "build" / "pytest-reports"
    return Settings.defaults(guest=config.getoption("--kcb-guest"), drivers_dir=config.getoption("--kcb-drivers"), out_dir=out)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> ScenarioFile | None:
    if file_path.suffix in SUFFIXES and "scenarios" in file_path.parent.parts:
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that need a real Windows VM run only when KCB_WINDOWS_CONFIG names a configuration."""
    if os.environ.get("KCB_WINDOWS_CONFIG"):
        return
    deselected = [item for item in items if item.get_closest_marker("windows_vm") is not None]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item.get_closest_marker("windows_vm") is None]


def pytest_sessionfinish(session: pytest.Session) -> None:
    results = session.config.stash.get(_RESULTS, [])
    if results:
        write_reports(results, _settings(session.config).out_dir)


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
        self.add_marker(pytest.mark.wine)

    def runtest(self) -> None:
        __tracebackhide__ = True
        config = self.config
        settings = _settings(config)
        if _FACTORY not in config.stash:
            config.stash[_FACTORY] = guest_factory(settings)
        result = run_scenario(self.loaded, config.stash[_FACTORY], settings.drivers_dir, settings.out_dir)
        config.stash[_RESULTS].append(result)
        self.user_properties.append(("outcome", result.outcome))
        self.user_properties.append(("raw_log", str(result.raw_log)))
        if not result.passed:
            raise ScenarioFailed(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, ScenarioFailed):
            result = excinfo.value.result
            lines = [f"{result.outcome}: {result.message}"]
            if result.context:
                lines.append("kernel log nearby:")
                lines += [f"  +{line.t:.3f}s {line.text}" for line in result.context]
            lines.append(f"raw kernel log: {result.raw_log}")
            return "\n".join(lines)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"scenario {self.loaded.id}: {self.loaded.scenario.name}"
