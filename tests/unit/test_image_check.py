"""Deciding from an image's headers whether the embedded guest can run it (pure), and finding Wine's stubs."""

from __future__ import annotations

import struct

import pytest

from harness.driver.pe import ImageFacts, ImportedDll
from harness.guests.wine.exports import KernelInventory, ModuleExports, forward_target, stub_name
from harness.guests.wine.imagecheck import refusal

INVENTORY = KernelInventory(
    wine="Wine 8.0",
    modules={
        "ntoskrnl.exe": ModuleExports(frozenset({"DbgPrintEx", "ExCreateCallback"}), frozenset({"ExQueueWorkItem"})),
        "hal.dll": ModuleExports(frozenset({"KeQueryPerformanceCounter"}), frozenset({"HalGetBusData"})),
    },
)
LIBVIRT = "; run it on a Windows VM: --guest libvirt"


def image(*imports: ImportedDll, machine: int = 0x8664, subsystem: int = 1) -> ImageFacts:
    return ImageFacts(machine=machine, subsystem=subsystem, imports=imports)


def test_an_image_using_only_what_the_guest_implements_runs() -> None:
    facts = image(ImportedDll("NTOSKRNL.EXE", ("DbgPrintEx", "ExCreateCallback")), ImportedDll("HAL.dll", ("KeQueryPerformanceCounter",)))
    assert refusal("ok.sys", facts, INVENTORY) is None


def test_no_imports_at_all_runs() -> None:
    assert refusal("anchor.sys", image(), INVENTORY) is None


def test_stubs_and_absent_functions_are_named_with_their_dll() -> None:
    facts = image(
        ImportedDll("ntoskrnl.exe", ("DbgPrintEx", "ExQueueWorkItem", "ExAllocatePool2")), ImportedDll("HAL.dll", ("HalGetBusData",))
    )
    # Sorted, whatever order the import table has (it changes with the build's flags).
    assert refusal("x.sys", facts, INVENTORY) == (
        "x.sys imports functions the embedded guest does not implement: HAL.dll!HalGetBusData (a stub in Wine 8.0), "
        "ntoskrnl.exe!ExAllocatePool2 (not in Wine 8.0), ntoskrnl.exe!ExQueueWorkItem (a stub in Wine 8.0)" + LIBVIRT
    )


def test_an_import_by_ordinal_cannot_be_matched() -> None:
    assert refusal("x.sys", image(ImportedDll("ntoskrnl.exe", (12,))), INVENTORY) == (
        "x.sys imports functions the embedded guest does not implement: ntoskrnl.exe!#12 (imported by ordinal)" + LIBVIRT
    )


def test_dlls_the_guest_lacks_and_missing_functions_in_one_line() -> None:
    facts = image(ImportedDll("ntoskrnl.exe", ("ExQueueWorkItem",)), ImportedDll("WDFLDR.SYS", ("WdfVersionBind", 3)))
    line = refusal("kmdf.sys", facts, INVENTORY)
    assert line == (
        "kmdf.sys imports functions the embedded guest does not implement: ntoskrnl.exe!ExQueueWorkItem (a stub in Wine 8.0); "
        "imports from DLLs the embedded guest does not provide: WDFLDR.SYS (WdfVersionBind, #3)" + LIBVIRT
    )
    assert line is not None and "\n" not in line


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        (
            0x14C,
            "x.sys is built for 32-bit x86 (machine 0x14c), not x64: the embedded guest runs x64 drivers only; "
            "run it on a 32-bit Windows VM: --guest libvirt",
        ),  # fmt: skip
        (
            0xAA64,
            "x.sys is built for ARM64 (machine 0xaa64), not x64: the embedded guest runs x64 drivers only; "
            "run it on a Windows VM for ARM64: --guest libvirt",
        ),  # fmt: skip
    ],
)
def test_the_wrong_architecture_is_named(machine: int, expected: str) -> None:
    # The machine is decided first: the imports of a foreign image say nothing about this guest.
    assert refusal("x.sys", image(ImportedDll("ntoskrnl.exe", ("KeFoo",)), machine=machine), INVENTORY) == expected


@pytest.mark.parametrize(("subsystem", "word"), [(2, "Windows GUI"), (3, "Windows console"), (10, "EFI application"), (77, "unknown")])
def test_an_image_that_is_not_native_is_no_driver(subsystem: int, word: str) -> None:
    assert refusal("x.sys", image(subsystem=subsystem), INVENTORY) == (
        f"x.sys is not a kernel driver: its subsystem is {subsystem} ({word}), a driver's is 1 (native)"
    )


def stub_code(own_name_at: int, rva: int) -> bytes:
    """winebuild's x86-64 stub: sub $0x28,%rsp; lea dll(%rip),%rcx; lea name(%rip),%rdx; call handler."""
    return (
        b"\x48\x83\xec\x28"
        + b"\x48\x8d\x0d"
        + struct.pack("<i", 0x100)
        + b"\x48\x8d\x15"
        + struct.pack("<i", own_name_at - (rva + 18))
        + b"\xe8"
        + struct.pack("<i", 0x2000)
    )


def test_a_winebuild_stub_reports_the_name_it_loads() -> None:
    strings = {0x9000: b"ExQueueWorkItem"}
    assert stub_name(stub_code(0x9000, 0x1360), 0x1360, strings.__getitem__) == b"ExQueueWorkItem"


@pytest.mark.parametrize(
    "code",
    [
        b"\x48\x83\xec\x58" + b"\x90" * 19,  # a real function's prologue
        b"\x53\x48\x83\xec\x20" + b"\x90" * 18,
        b"",
    ],
)
def test_other_code_is_no_stub(code: bytes) -> None:
    assert stub_name(code, 0x1000, lambda rva: b"never read") is None


def test_the_cache_holds_only_for_the_same_files() -> None:
    key: list[list[object]] = [["ntoskrnl.exe", "/x/ntoskrnl.exe", 1000, 1]]
    text = INVENTORY.to_json(key)
    assert KernelInventory.from_json(text, key) == INVENTORY
    assert KernelInventory.from_json(text, [["ntoskrnl.exe", "/x/ntoskrnl.exe", 1000, 2]]) is None
    assert KernelInventory.from_json("{not json", key) is None
    assert KernelInventory.from_json('{"format": 1}', key) is None


@pytest.mark.parametrize(
    ("forwarder", "target"),
    [
        ("ntoskwine.ExFoo", ("ntoskwine.dll", "ExFoo")),
        ("ntoskrnl.exe.KeLowerIrql", ("ntoskrnl.exe", "KeLowerIrql")),
        ("NTDLL.NlsAnsiCodePage", ("ntdll.dll", "NlsAnsiCodePage")),
    ],
)
def test_forwarders_name_a_module_and_a_function(forwarder: str, target: tuple[str, str]) -> None:
    assert forward_target(forwarder) == target
