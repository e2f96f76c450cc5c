"""A scenario's result on disk (``scenarios/<id>/result.json``), so reports can be made from any set of finished runs.

Written as each scenario finishes; read back by the report writer (the suite's
own run, pytest-xdist's controller, ``report merge`` of CI shards). The codec is
driven by the dataclasses' type hints: every dataclass is written with its
class name (so a union of event types reads back as the right type), paths as
text, bytes as hex text, tuples as lists. Pure except for ``save``/``load``.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from harness.runner import ScenarioResult

RESULT_FILE = "result.json"
FORMAT = 1
_TYPE = "__type__"


class ResultFormatError(ValueError):
    """A result file that is not one this harness wrote (or of another format version)."""


def encode(value: Any) -> Any:
    """Plain JSON data for a result (dataclasses tagged with their class name)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {_TYPE: type(value).__name__, **{f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [encode(item) for item in value]
    if isinstance(value, dict):
        return {str(key): encode(item) for key, item in value.items()}
    return value


def _dataclasses_in(hint: Any) -> dict[str, type]:
    """The dataclasses a type hint can hold, by name (for tagged unions)."""
    found: dict[str, type] = {}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        found[hint.__name__] = hint
    for argument in get_args(hint):
        found.update(_dataclasses_in(argument))
    return found


def decode(data: Any, hint: Any) -> Any:
    """The value of type ``hint`` that ``encode`` wrote as ``data``.

    Raises:
        ResultFormatError: the data does not fit the type.
    """
    origin = get_origin(hint)
    if hint is Any:
        return data
    if hint is Path:
        return Path(data)
    if hint is bytes:
        try:
            return bytes.fromhex(data)
        except (TypeError, ValueError):
            raise ResultFormatError(f"expected hex bytes, got {str(data)[:80]!r}") from None
    if origin is Literal:
        if data not in get_args(hint):
            raise ResultFormatError(f"{data!r} is not one of {get_args(hint)}")
        return data
    if origin in (Union, types.UnionType):
        if data is None and type(None) in get_args(hint):
            return None
        if isinstance(data, dict) and _TYPE in data:
            classes = _dataclasses_in(hint)
            if data[_TYPE] not in classes:
                raise ResultFormatError(f"unexpected {data[_TYPE]!r} (expected one of {', '.join(classes)})")
            return decode(data, classes[data[_TYPE]])
        for option in get_args(hint):
            if option is not type(None) and _fits(data, option):
                return decode(data, option)
        raise ResultFormatError(f"{data!r} fits none of {hint}")
    if origin in (list, typing.Sequence):
        return [decode(item, get_args(hint)[0]) for item in _list(data)]
    if origin is tuple:
        arguments = get_args(hint)
        items = _list(data)
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            return tuple(decode(item, arguments[0]) for item in items)
        return tuple(decode(item, argument) for item, argument in zip(items, arguments, strict=True))
    if origin is dict:
        key_type, value_type = get_args(hint)
        return {decode(key, key_type): decode(item, value_type) for key, item in dict(data).items()}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(data, dict) or data.get(_TYPE) != hint.__name__:
            raise ResultFormatError(f"expected a {hint.__name__}, got {str(data)[:80]!r}")
        hints = get_type_hints(hint)
        fields = {f.name for f in dataclasses.fields(hint) if f.init}
        return hint(**{name: decode(value, hints[name]) for name, value in data.items() if name in fields})
    if hint is float and isinstance(data, int | float) and not isinstance(data, bool):
        return float(data)
    if isinstance(hint, type) and not isinstance(data, hint):
        raise ResultFormatError(f"expected {hint.__name__}, got {data!r}")
    return data


def _fits(data: Any, option: Any) -> bool:
    if option is Path or option is bytes:
        return isinstance(data, str)
    if option is float:
        return isinstance(data, int | float) and not isinstance(data, bool)
    if isinstance(option, type) and not get_origin(option):
        return isinstance(data, option)
    return False


def _list(data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise ResultFormatError(f"expected a list, got {str(data)[:80]!r}")
    return data


def save(result: ScenarioResult) -> Path:
    """Write ``result.json`` into the scenario's folder (atomically: a reader never sees half of it)."""
    path = result.run_dir / RESULT_FILE
    result.run_dir.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"format": FORMAT, "result": encode(result)}, indent=1) + "\n", encoding="utf-8")
    temporary.replace(path)
    return path


def load(path: Path) -> ScenarioResult:
    """A result written by ``save``.

    Raises:
        ResultFormatError: not such a file.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ResultFormatError(f"{path}: not a result file ({error})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ResultFormatError(f"{path}: not a result file of format {FORMAT}")
    result: ScenarioResult = decode(data["result"], ScenarioResult)
    return result


def load_dir(out_dir: Path) -> list[ScenarioResult]:
    """Every result under ``out_dir``/scenarios, in the order of their folder names."""
    return [load(path) for path in sorted((out_dir / "scenarios").glob(f"*/{RESULT_FILE}"))]
