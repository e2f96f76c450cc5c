"""Whether the embedded guest can run a driver image, decided from its headers before anything loads. Pure.

An image is refused, in one line, when it is not built for x64, is not a native (kernel-mode) image, imports
from a DLL the guest does not have, or imports functions the guest does not implement (Wine's stubs count as
missing). A driver the guest refuses may still run on Windows: the line says so.
"""

from __future__ import annotations

from harness.driver.pe import MACHINE_AMD64, SUBSYSTEM_NATIVE, ImageFacts
from harness.guests.wine.exports import KernelInventory

ON_WINDOWS = "run it on a Windows VM: --guest libvirt"


def _function(dll: str, function: str | int) -> str:
    return f"{dll}!{function}" if isinstance(function, str) else f"{dll}!#{function}"


def refusal(image: str, facts: ImageFacts, inventory: KernelInventory) -> str | None:
    """One line on why the guest cannot run ``image`` (its file name), or None when it can."""
    if facts.machine != MACHINE_AMD64:
        where = "a 32-bit Windows VM" if facts.machine == 0x014C else f"a Windows VM for {facts.machine_name}"
        return (
            f"{image} is built for {facts.machine_name} (machine {facts.machine:#x}), not x64: "
            f"the embedded guest runs x64 drivers only; run it on {where}: --guest libvirt"
        )
    if facts.subsystem != SUBSYSTEM_NATIVE:
        return (
            f"{image} is not a kernel driver: its subsystem is {facts.subsystem} ({facts.subsystem_name}), "
            f"a driver's is {SUBSYSTEM_NATIVE} (native)"
        )
    missing: list[str] = []
    foreign: list[str] = []
    for dll in facts.imports:
        exports = inventory.modules.get(dll.name.lower())
        if exports is None:
            names = ", ".join(str(f) if isinstance(f, str) else f"#{f}" for f in dll.functions)
            foreign.append(f"{dll.name} ({names})" if names else dll.name)
            continue
        for function in dll.functions:
            if isinstance(function, int):
                # Wine numbers its exports its own way: an import by ordinal cannot be matched to Windows'.
                missing.append(f"{_function(dll.name, function)} (imported by ordinal)")
            elif function in exports.stubs:
                missing.append(f"{_function(dll.name, function)} (a stub in {inventory.wine})")
            elif function not in exports.implemented:
                missing.append(f"{_function(dll.name, function)} (not in {inventory.wine})")
    if not missing and not foreign:
        return None
    parts = [image]
    if missing:
        parts.append(f" imports functions the embedded guest does not implement: {', '.join(sorted(missing, key=str.lower))}")
    if foreign:
        parts.append(";" if missing else "")
        parts.append(f" imports from DLLs the embedded guest does not provide: {', '.join(sorted(foreign, key=str.lower))}")
    return "".join(parts) + f"; {ON_WINDOWS}"
