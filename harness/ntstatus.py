"""NTSTATUS values by name, as scenarios and reports use them."""

from __future__ import annotations

import re

NAMES: dict[str, int] = {
    "STATUS_SUCCESS": 0x00000000,
    "STATUS_TIMEOUT": 0x00000102,
    "STATUS_PENDING": 0x00000103,
    "STATUS_UNSUCCESSFUL": 0xC0000001,
    "STATUS_NOT_IMPLEMENTED": 0xC0000002,
    "STATUS_ACCESS_VIOLATION": 0xC0000005,
    "STATUS_INVALID_PARAMETER": 0xC000000D,
    "STATUS_NO_MEMORY": 0xC0000017,
    "STATUS_ACCESS_DENIED": 0xC0000022,
    "STATUS_OBJECT_NAME_INVALID": 0xC0000033,
    "STATUS_OBJECT_NAME_NOT_FOUND": 0xC0000034,
    "STATUS_OBJECT_NAME_COLLISION": 0xC0000035,
    "STATUS_OBJECT_PATH_NOT_FOUND": 0xC000003A,
    "STATUS_PROCEDURE_NOT_FOUND": 0xC000007A,
    "STATUS_INVALID_IMAGE_FORMAT": 0xC000007B,
    "STATUS_INSUFFICIENT_RESOURCES": 0xC000009A,
    "STATUS_NOT_SUPPORTED": 0xC00000BB,
    "STATUS_IMAGE_ALREADY_LOADED": 0xC000010E,
    "STATUS_DLL_NOT_FOUND": 0xC0000135,
    "STATUS_DLL_INIT_FAILED": 0xC0000142,
    "STATUS_DRIVER_UNABLE_TO_LOAD": 0xC000026C,
    "STATUS_DRIVER_BLOCKED": 0xC000036C,
    "STATUS_INVALID_IMAGE_HASH": 0xC0000428,
}
_BY_VALUE = {value: name for name, value in NAMES.items()}
_HEX = re.compile(r"^(0[xX])?[0-9a-fA-F]{1,8}$")


def parse_status(value: object) -> int:
    """An NTSTATUS from a name (``STATUS_OBJECT_NAME_NOT_FOUND``), ``0xC0000034`` or an int.

    Raises:
        ValueError: neither a known name nor a 32-bit value.
    """
    if isinstance(value, bool):
        raise ValueError("expected an NTSTATUS name or a hexadecimal value")
    if isinstance(value, int):
        if 0 <= value <= 0xFFFFFFFF:
            return value
        raise ValueError(f"NTSTATUS {value} is not a 32-bit value")
    if isinstance(value, str):
        text = value.strip()
        if text.upper() in NAMES:
            return NAMES[text.upper()]
        if text.lower().startswith("0x") and _HEX.match(text):
            return int(text, 16)
    raise ValueError(f"expected an NTSTATUS name such as STATUS_SUCCESS or a value such as 0xC0000034, got {value!r}")


def status_name(value: int) -> str:
    """``STATUS_OBJECT_NAME_NOT_FOUND (0xC0000034)``, or just the hex value when unnamed."""
    name = _BY_VALUE.get(value)
    return f"{name} (0x{value:08X})" if name else f"0x{value:08X}"


def is_success(value: int) -> bool:
    """NT_SUCCESS: severity success or informational."""
    return value < 0x80000000
