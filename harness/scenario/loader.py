"""Loading scenario files with line numbers, so every error names file, line and field."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from harness.errors import ScenarioError
from harness.scenario.model import STEP_KINDS, LoadStep, Scenario, UnloadStep

PathKey = tuple[str | int, ...]
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


def _to_python(node: yaml.Node, loader: yaml.SafeLoader, path: PathKey, lines: dict[PathKey, int], source: Path) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node)
            if not isinstance(key, str):
                raise ScenarioError(source, key_node.start_mark.line + 1, format_field(path), f"keys must be text, got {key!r}")
            if key in result:
                raise ScenarioError(source, key_node.start_mark.line + 1, format_field((*path, key)), "duplicate key")
            result[key] = _to_python(value_node, loader, (*path, key), lines, source)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, loader, (*path, index), lines, source) for index, item in enumerate(node.value)]
    return loader.construct_object(node)


def parse_yaml(text: str, source: Path) -> tuple[Any, dict[PathKey, int]]:
    """YAML text to plain data plus the line of every node, keyed by its path.

    Raises:
        ScenarioError: not YAML, or duplicate keys.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        lines: dict[PathKey, int] = {}
        data = _to_python(node, loader, (), lines, source) if node is not None else None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else None
        raise ScenarioError(source, line, "", f"not valid YAML: {error.problem or error.context}") from None
    except yaml.YAMLError as error:
        raise ScenarioError(source, None, "", f"not valid YAML: {error}") from None
    finally:
        loader.dispose()
    return data, lines


def format_field(path: PathKey) -> str:
    """``("steps", 2, "expect")`` -> ``steps[2].expect``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _data_path(data: Any, loc: tuple[str | int, ...]) -> PathKey:
    """Pydantic's error location reduced to the keys that exist in the data (drops union tags)."""
    path: list[str | int] = []
    current = data
    for position, part in enumerate(loc):
        if position == 2 and loc[0] == "steps" and part in STEP_KINDS and len(loc) > 3:
            continue  # the union tag pydantic puts after a step's index
        key = "for" if part == "for_" else part
        found = (isinstance(current, dict) and key in current) or (
            isinstance(current, list) and isinstance(key, int) and 0 <= key < len(current)
        )
        if found:
            current = current[key]
            path.append(key)
    return tuple(path)


def _message(error: ErrorDetails) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "string_pattern_mismatch":
        return f"expected a plain name (letters, digits, '_', '-', '.'), got {error.get('input')!r}"
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message


def _nearest_line(path: PathKey, lines: dict[PathKey, int]) -> int | None:
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


def load_scenario(path: Path) -> LoadedScenario:
    """Read and validate one scenario file.

    Raises:
        ScenarioError: unreadable file, bad YAML, or a field that does not validate.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ScenarioError(path, None, "", f"cannot read the file: {error}") from None
    data, lines = parse_yaml(text, path)
    if not isinstance(data, dict):
        raise ScenarioError(path, 1, "", "expected a mapping with name, drivers and steps")
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        field_path = _data_path(data, tuple(first["loc"]))
        line = _nearest_line(field_path, lines)
        if first["type"] == "missing" and first["loc"]:
            missing = first["loc"][-1]
            field_path = (*field_path, "for" if missing == "for_" else missing)
        raise ScenarioError(path, line, format_field(field_path), _message(first)) from None
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
    seen: dict[str, str] = {}
    for logical, spec in scenario.drivers.items():
        if spec.service.lower() in seen:
            where = ("drivers", logical, "service")
            message = f"service name {spec.service!r} is already used by driver {seen[spec.service.lower()]!r}"
            raise ScenarioError(path, lines.get(where), format_field(where), message)
        seen[spec.service.lower()] = logical


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
