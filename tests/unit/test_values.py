"""Durations and NTSTATUS values as scenario files write them."""

from __future__ import annotations

import pytest

from harness.durations import format_duration, parse_duration
from harness.ntstatus import is_success, parse_status, status_name


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2s", 2.0), ("500ms", 0.5), ("1.5m", 90.0), ("1h", 3600.0), (3, 3.0), (0.25, 0.25), (" 10 s ", 10.0), ("0s", 0.0)],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "2 parsecs", "-1s", -1, True, None, "1e3s", "s"])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration(0.25) == "250ms"
    assert format_duration(2) == "2s"
    assert format_duration(1.5) == "1.5s"


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("STATUS_OBJECT_NAME_NOT_FOUND", 0xC0000034),
        ("status_success", 0),
        ("0xC0000034", 0xC0000034),
        ("0xc0000034", 0xC0000034),
        (0, 0),
        (0xC0000001, 0xC0000001),
    ],
)
def test_parse_status(value: object, code: int) -> None:
    assert parse_status(value) == code


@pytest.mark.parametrize("value", ["STATUS_NOPE", "C0000034", "0x1C0000034", -1, 1 << 32, True, 1.5])
def test_parse_status_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        parse_status(value)


def test_status_name() -> None:
    assert status_name(0xC0000034) == "STATUS_OBJECT_NAME_NOT_FOUND (0xC0000034)"
    assert status_name(0xC0ABCDEF) == "0xC0ABCDEF"
    assert is_success(0) and is_success(0x103) and not is_success(0xC0000034)
