"""The shim's module-definition files, generated from Wine's export table."""

from __future__ import annotations

import pytest

from harness.guests.wine.ntoskrnl import FORWARD_MODULE, IMPLEMENTED, WRAPPED, import_def, parse_objdump_exports, shim_def

OBJDUMP = """\
Export Address Table -- Ordinal Base 1
\t[   0] +base[   1] 20260 Export RVA
[Ordinal/Name Pointer] Table
\t[  66] CcCanIWrite
\t[ 131] ExCreateCallback
{more}
\t[1655] wine_enumerate_root_devices

The Function Table (interpreted .pdata section contents)
"""


def sample() -> str:
    more = "\n".join(f"\t[{900 + i:4d}] {name}" for i, name in enumerate(name for name in IMPLEMENTED if name != "ExCreateCallback"))
    return OBJDUMP.format(more=more)


def test_parse_exports() -> None:
    names = parse_objdump_exports(sample())
    assert names[0] == "CcCanIWrite" and names[-1] == "wine_enumerate_root_devices"
    assert set(IMPLEMENTED) <= set(names)


def test_parse_rejects_output_without_exports() -> None:
    with pytest.raises(ValueError):
        parse_objdump_exports("no exports here")


def test_shim_def_forwards_everything_it_does_not_implement() -> None:
    text = shim_def(parse_objdump_exports(sample()))
    lines = text.splitlines()
    assert lines[:2] == ["LIBRARY ntoskrnl.exe", "EXPORTS"]
    assert f"    CcCanIWrite={FORWARD_MODULE}.CcCanIWrite" in lines
    assert "    ExCreateCallback" in lines
    assert not any(line.startswith(f"    {name}=") for name in IMPLEMENTED for line in lines)


def test_shim_def_refuses_a_wine_without_an_implemented_export() -> None:
    with pytest.raises(ValueError, match="ExCreateCallback"):
        shim_def(["CcCanIWrite"])


def test_import_def_aliases_wines_own_implementations() -> None:
    text = import_def(parse_objdump_exports(sample()))
    for name in WRAPPED:
        assert f"    wine_{name} == {name}" in text
    assert "    ExCreateCallback\n" not in text
