"""YAML files with line numbers, validated by pydantic: every error names file, line and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from harness.errors import FileError

PathKey = tuple[str | int, ...]
ErrorType = type[FileError]
M = TypeVar("M", bound=BaseModel)


def _to_python(node: yaml.Node, loader: yaml.SafeLoader, path: PathKey, lines: dict[PathKey, int], source: Path, error: ErrorType) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node)
            if not isinstance(key, str):
                raise error(source, key_node.start_mark.line + 1, format_field(path), f"keys must be text, got {key!r}")
            if key in result:
                raise error(source, key_node.start_mark.line + 1, format_field((*path, key)), "duplicate key")
            result[key] = _to_python(value_node, loader, (*path, key), lines, source, error)
            lines[(*path, key)] = key_node.start_mark.line + 1  # point at the key, not its block
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, loader, (*path, index), lines, source, error) for index, item in enumerate(node.value)]
    return loader.construct_object(node)


def read_text(path: Path, error: ErrorType) -> str:
    """The file's text.

    Raises:
        error: unreadable, or not UTF-8 (with the line of the first bad byte).
    """
    try:
        raw = path.read_bytes()
    except OSError as problem:
        raise error(path, None, "", f"cannot read the file: {problem.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as problem:
        line = raw.count(b"\n", 0, problem.start) + 1
        raise error(path, line, "", f"not UTF-8 text (byte 0x{raw[problem.start]:02x} at offset {problem.start})") from None


def parse_yaml(text: str, source: Path, error: ErrorType) -> tuple[Any, dict[PathKey, int]]:
    """YAML text to plain data plus the line of every node, keyed by its path.

    Raises:
        ScenarioError: not YAML, or duplicate keys.
    """
    try:
        loader = yaml.SafeLoader(text)  # its reader rejects control characters here already
    except yaml.reader.ReaderError as problem:
        raise _unprintable(problem, text, source, error) from None
    try:
        node = loader.get_single_node()
        lines: dict[PathKey, int] = {}
        data = _to_python(node, loader, (), lines, source, error) if node is not None else None
    except yaml.reader.ReaderError as problem:
        raise _unprintable(problem, text, source, error) from None
    except yaml.MarkedYAMLError as problem:
        mark = problem.problem_mark or problem.context_mark
        line = mark.line + 1 if mark is not None else None
        raise error(source, line, "", f"not valid YAML: {problem.problem or problem.context}") from None
    except yaml.YAMLError as problem:
        raise error(source, None, "", f"not valid YAML: {problem}") from None
    finally:
        loader.dispose()
    return data, lines


def _unprintable(problem: yaml.reader.ReaderError, text: str, source: Path, error: ErrorType) -> FileError:
    """A character YAML does not allow (a NUL, a control character), at its line."""
    line = text.count("\n", 0, problem.position) + 1
    return error(source, line, "", f"not valid YAML: character #x{problem.character:04x} is not allowed in a YAML file")


def format_field(path: PathKey) -> str:
    """``("steps", 2, "expect")`` -> ``steps[2].expect``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _data_path(data: Any, loc: tuple[str | int, ...], skip_tags: tuple[str, ...]) -> PathKey:
    """Pydantic's error location reduced to the keys that exist in the data (drops union tags)."""
    path: list[str | int] = []
    current = data
    for position, part in enumerate(loc):
        if position == 2 and part in skip_tags and len(loc) > 3:
            continue  # the union tag pydantic puts after a list item's index
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


def validate(model: type[M], data: Any, lines: dict[PathKey, int], path: Path, error: ErrorType, skip_tags: tuple[str, ...] = ()) -> M:
    """``model`` validated from ``data``; the first problem raised as ``error(path, line, field, message)``.

    Args:
        skip_tags: discriminator tags pydantic puts into locations after a list index.
    """
    try:
        return model.model_validate(data)
    except ValidationError as problem:
        first = problem.errors()[0]
        field_path = _data_path(data, tuple(first["loc"]), skip_tags)
        line = _nearest_line(field_path, lines)
        if first["type"] == "missing" and first["loc"]:
            missing = first["loc"][-1]
            field_path = (*field_path, "for" if missing == "for_" else missing)
        raise error(path, line, format_field(field_path), _message(first)) from None
