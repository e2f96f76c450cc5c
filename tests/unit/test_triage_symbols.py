"""Function and source line from the build's symbol files, on the real compiled drivers with binutils' addr2line."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from harness.triage.pe import PeImage
from harness.triage.symbols import Symbolizer, find_symbol_files, nearest, parse_addr2line, parse_map
from tests.integration.conftest import ROOT

BUILD = ROOT / "build"
SEEDED = BUILD / "drivers-seeded-bug"
RECEIVER_C = ROOT / "guest-drivers" / "receiver" / "receiver.c"


def start_of(debug: Path, function: str) -> int:
    """A function's RVA, from the unstripped copy's symbol table (nm)."""
    base = PeImage(debug).image_base
    for line in subprocess.run(["x86_64-w64-mingw32-nm", str(debug)], capture_output=True, text=True, check=True).stdout.splitlines():
        address, _, name = line.split()
        if name == function:
            return int(address, 16) - base
    raise AssertionError(f"{function} not in {debug}")


def body_lines(function: str) -> range:
    lines = RECEIVER_C.read_text().splitlines()
    start = next(index for index, text in enumerate(lines) if text.startswith(f"static VOID {function}("))
    end = next(index for index in range(start, len(lines)) if lines[index] == "}")
    return range(start + 1, end + 2)


def test_addr2line_output_with_inlines_unknowns_and_discriminators() -> None:
    output = "\n".join(
        [
            "0x0000000140001020", "OnNotify", "/src/receiver.c:91",
            "0x0000000140001090", "helper", "/src/a.c:5 (discriminator 2)", "DriverEntry", "/src/a.c:40",
            "0x0000000140009999", "??", "??:0",
        ]
    )  # fmt: skip
    assert parse_addr2line(output) == {
        0x140001020: [("OnNotify", "/src/receiver.c", 91)],
        0x140001090: [("helper", "/src/a.c", 5), ("DriverEntry", "/src/a.c", 40)],
        0x140009999: [(None, None, None)],
    }


def test_map_files_list_global_functions_only() -> None:
    symbols = dict((name, address) for address, name in parse_map((SEEDED / "receiver.map").read_text()))
    image = PeImage(SEEDED / "receiver.sys")
    assert symbols["DriverEntry"] - image.image_base == start_of(SEEDED / "receiver.debug", "DriverEntry")
    assert "OnNotify" not in symbols  # static
    assert nearest(sorted((address, name) for name, address in symbols.items()), symbols["DriverEntry"] + 3) == (
        symbols["DriverEntry"],
        "DriverEntry",
    )


def test_the_debug_copy_names_a_static_routine_with_its_source_line() -> None:
    on_notify = start_of(SEEDED / "receiver.debug", "OnNotify")
    symbols = Symbolizer({"receiver.sys": SEEDED / "receiver.sys"})
    location = symbols.locate("receiver.sys", [on_notify])[on_notify]
    assert location.function == "OnNotify" and location.quality == "debug"
    assert location.file is not None and Path(location.file).resolve() == RECEIVER_C.resolve()
    assert location.line in body_lines("OnNotify")
    assert symbols.notes() == ()


def test_a_debug_copy_of_another_build_is_never_used(tmp_path: Path) -> None:
    shutil.copyfile(SEEDED / "receiver.sys", tmp_path / "receiver.sys")
    shutil.copyfile(BUILD / "drivers" / "receiver.debug", tmp_path / "receiver.debug")  # the fixed build's
    files = find_symbol_files(tmp_path / "receiver.sys", [])
    assert files.debug is None and files.stale_debug == tmp_path / "receiver.debug"
    symbols = Symbolizer({"receiver.sys": tmp_path / "receiver.sys"})
    on_notify = start_of(SEEDED / "receiver.debug", "OnNotify")
    assert symbols.locate("receiver.sys", [on_notify]) == {}
    assert "is not this image's debug copy" in symbols.notes()[0]


def test_symbols_from_another_folder(tmp_path: Path) -> None:
    images, symbols_dir = tmp_path / "images", tmp_path / "symbols"
    images.mkdir()
    symbols_dir.mkdir()
    shutil.copyfile(SEEDED / "receiver.sys", images / "receiver.sys")
    shutil.copyfile(BUILD / "drivers" / "receiver.debug", images / "receiver.debug")  # stale, next to the image
    shutil.copyfile(SEEDED / "receiver.debug", symbols_dir / "receiver.debug")  # the right one, elsewhere
    on_notify = start_of(SEEDED / "receiver.debug", "OnNotify")
    located = Symbolizer({"receiver.sys": images / "receiver.sys"}, [symbols_dir]).locate("receiver.sys", [on_notify])
    assert located[on_notify].function == "OnNotify"


def test_a_map_file_alone_names_global_functions(tmp_path: Path) -> None:
    shutil.copyfile(SEEDED / "receiver.sys", tmp_path / "receiver.sys")
    shutil.copyfile(SEEDED / "receiver.map", tmp_path / "receiver.map")
    entry, on_notify = start_of(SEEDED / "receiver.debug", "DriverEntry"), start_of(SEEDED / "receiver.debug", "OnNotify")
    symbols = Symbolizer({"receiver.sys": tmp_path / "receiver.sys"})
    located = symbols.locate("receiver.sys", [entry + 4, on_notify])
    assert located[entry + 4].function == "DriverEntry" and located[entry + 4].displacement == 4 and located[entry + 4].quality == "map"
    assert on_notify not in located  # a static function: not in the map, and not misnamed after its neighbour
    assert "only a map file" in symbols.notes()[0]


def test_a_stripped_driver_is_named_by_its_exports_at_best_and_says_so(tmp_path: Path) -> None:
    shutil.copyfile(SEEDED / "receiver.sys", tmp_path / "receiver.sys")
    entry, on_notify = start_of(SEEDED / "receiver.debug", "DriverEntry"), start_of(SEEDED / "receiver.debug", "OnNotify")
    symbols = Symbolizer({"receiver.sys": tmp_path / "receiver.sys"})
    located = symbols.locate("receiver.sys", [entry + 8, on_notify])
    assert located[entry + 8].function == "DriverEntry" and located[entry + 8].quality == "export"
    assert on_notify not in located
    assert symbols.notes() == (
        "receiver.sys: no symbols (receiver.debug or receiver.map next to the image or in --symbols): named by module and offset",
    )


def test_an_msvc_pdb_is_named_as_unreadable_here(tmp_path: Path) -> None:
    shutil.copyfile(SEEDED / "receiver.sys", tmp_path / "receiver.sys")
    (tmp_path / "receiver.pdb").write_bytes(b"Microsoft C/C++ MSF 7.00\r\n")
    symbols = Symbolizer({"receiver.sys": tmp_path / "receiver.sys"})
    symbols.locate("receiver.sys", [0x1000])
    assert "MSVC PDB symbols" in symbols.notes()[0] and "cannot be read on this host" in symbols.notes()[0]


def test_system_images_are_found_by_name_in_the_guests_folders() -> None:
    symbols = Symbolizer({}, [], [BUILD / "wine"])
    assert symbols.image_file("NTOSKRNL.EXE") == BUILD / "wine" / "ntoskrnl.exe"
    notify = start_of(BUILD / "wine" / "ntoskrnl.debug", "ExNotifyCallback")
    assert symbols.locate("ntoskrnl.exe", [notify + 2])[notify + 2].function == "ExNotifyCallback"
    assert symbols.locate("nosuch.dll", [0x1000]) == {}
