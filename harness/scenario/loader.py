"""Loading scenario files with line numbers, so every error names file, line and field."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.errors import ScenarioError
from harness.scenario.model import (
    STEP_KINDS,
    ExpectNoStep,
    ExpectOrderStep,
    ExpectStep,
    LinePattern,
    LoadStep,
    RunStep,
    Scenario,
    UnloadStep,
    source_program,
)
from harness.yamlfile import PathKey, format_field, parse_yaml, read_text, validate

__all__ = ["LoadedScenario", "discover", "format_field", "load_scenario"]
SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class LoadedScenario:
    """A validated scenario with where it came from.

    ``id`` is the file name without suffix; ``step_lines`` the 1-based line of each step.
    """

    path: Path
    id: str
    scenario: Scenario
    step_lines: tuple[int, ...]


def load_scenario(path: Path) -> LoadedScenario:
    """Read and validate one scenario file.

    Raises:
        ScenarioError: unreadable file, bad YAML, or a field that does not validate.
    """
    data, lines = parse_yaml(read_text(path, ScenarioError), path, ScenarioError)
    if not isinstance(data, dict):
        raise ScenarioError(path, 1, "", "expected a mapping with name, drivers and steps")
    scenario = validate(Scenario, data, lines, path, ScenarioError, skip_tags=STEP_KINDS)
    _check_references(path, scenario, lines)
    step_lines = tuple(lines.get(("steps", index), 0) for index in range(len(scenario.steps)))
    return LoadedScenario(path=path, id=path.stem, scenario=scenario, step_lines=step_lines)


def _check_references(path: Path, scenario: Scenario, lines: dict[PathKey, int]) -> None:
    known = ", ".join(sorted(scenario.drivers))
    for index, step in enumerate(scenario.steps):
        if isinstance(step, LoadStep | UnloadStep):
            key = "load" if isinstance(step, LoadStep) else "unload"
            name = step.load if isinstance(step, LoadStep) else step.unload
            if name not in scenario.drivers:
                where: PathKey = ("steps", index, key)
                raise ScenarioError(path, lines.get(where), format_field(where), f"no driver named {name!r} in drivers (known: {known})")
    _check_sources(path, scenario, lines)
    seen: dict[str, str] = {}
    for logical, spec in scenario.drivers.items():
        if spec.service.lower() in seen:
            where = ("drivers", logical, "service")
            message = f"service name {spec.service!r} is already used by driver {seen[spec.service.lower()]!r}"
            raise ScenarioError(path, lines.get(where), format_field(where), message)
        seen[spec.service.lower()] = logical


def _patterns(step: object) -> list[tuple[PathKey, LinePattern]]:
    """An expectation step's patterns, each with its key path inside the step."""
    if isinstance(step, ExpectStep):
        return [(("expect",), step.expect)]
    if isinstance(step, ExpectNoStep):
        return [(("expect_no",), step.expect_no)]
    if isinstance(step, ExpectOrderStep):
        return [(("expect_order", "lines", index), pattern) for index, pattern in enumerate(step.expect_order.lines)]
    return []


def _check_sources(path: Path, scenario: Scenario, lines: dict[PathKey, int]) -> None:
    """An expectation's source that names a program must name one a run step runs (a typo would never match)."""
    run = {step.run.lower(): step.run for step in scenario.steps if isinstance(step, RunStep)}
    known = f"programs run: {', '.join(sorted(set(run.values())))}" if run else "the scenario has no run steps"
    for index, step in enumerate(scenario.steps):
        for inner, pattern in _patterns(step):
            program = source_program(pattern.source) if pattern.source is not None else None
            if program is not None and program.lower() not in run:
                where: PathKey = ("steps", index, *inner, "source")
                raise ScenarioError(path, lines.get(where), format_field(where), f"no run step runs {program!r} ({known})")


def discover(paths: list[Path]) -> list[Path]:
    """Scenario files from files and folders (folders searched recursively, sorted).

    Raises:
        ScenarioError: a path that does not exist or is not a scenario file.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file()))
        elif path.is_file():
            if path.suffix not in SUFFIXES:
                raise ScenarioError(path, None, "", "not a scenario file (expected .yaml or .yml)")
            found.append(path)
        else:
            raise ScenarioError(path, None, "", "no such file or folder")
    return found
