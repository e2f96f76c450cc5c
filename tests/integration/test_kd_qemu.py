"""A real serial port: QEMU (TCG) boots the Linux stand-in guest, whose KD target emulator writes
KDCOM packets through the emulated 16550 UART (COM1); the harness decodes them and answers over
the same port, and at the bugcheck reads the stopped (synthetic) kernel to say where it crashed. COM2
carries the emulator's own tally as plain text."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.config import project_root
from harness.kd.serial import Endpoint, KdSerialReader, TextSerialReader
from harness.kd.session import KdHost, KdLine
from harness.kd.synthetic import Machine
from harness.kernel.events import DebugEvent, GuestCrash, LogLine, StackReport
from harness.timeline import Timeline
from harness.triage.analyse import DriverModule, analyse
from harness.triage.symbols import Symbolizer

pytestmark = pytest.mark.qemu

STANDIN = project_root() / "build" / "standin"
NULL_DEREF = project_root() / "build" / "drivers-null-deref"
NOTIFY = "[sysRecv1]:get notify ulType:(1)\tulValue:(hello)"


@pytest.fixture
def qemu_kd(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, Path]]:
    qemu = shutil.which("qemu-system-x86_64")
    assert qemu is not None, "qemu-system-x86_64 is not installed: `make test` installs it (scripts/setup-host.sh)"
    assert (STANDIN / "vmlinuz").is_file(), "stand-in guest not built: make standin"
    kd_sock, com2_sock = tmp_path / "kd.sock", tmp_path / "com2.sock"
    command = [
        qemu, "-accel", "tcg", "-m", "256", "-nodefaults", "-display", "none", "-no-reboot",
        "-kernel", str(STANDIN / "vmlinuz"), "-initrd", str(STANDIN / "initramfs.cpio.gz"),
        "-append", "console=ttyS1 quiet kcb.mode=kd kcb.notifies=50",
        # COM2 first: the KD chardev waits (wait=on) until the harness connects, which starts the VM.
        "-chardev", f"socket,id=com2,path={com2_sock},server=on,wait=off",
        "-chardev", f"socket,id=kd,path={kd_sock},server=on,wait=on,logfile={tmp_path / 'qemu-kd.log'}",
        "-serial", "chardev:kd", "-serial", "chardev:com2",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield process, kd_sock, com2_sock
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def test_kd_over_a_real_qemu_serial_port(qemu_kd: tuple[subprocess.Popen[bytes], Path, Path], tmp_path: Path) -> None:
    process, kd_sock, com2_sock = qemu_kd
    timeline = Timeline()
    deadline = time.monotonic() + 30
    while not (com2_sock.exists() and kd_sock.exists()):
        assert process.poll() is None and time.monotonic() < deadline, "QEMU did not start"
        time.sleep(0.05)
    text = TextSerialReader(Endpoint.parse(f"unix:{com2_sock}"), timeline, tmp_path / "com2.log", reconnect=False)
    kd = KdSerialReader(Endpoint.parse(f"unix:{kd_sock}"), timeline, tmp_path / "kd-raw.log", reconnect=False)
    with text, kd:
        assert process.wait(timeout=120) == 0  # the guest powers itself off when the emulator is done
        timeline.wait_for(
            lambda events: True if any(isinstance(e, LogLine) and e.text.startswith("kdtarget: acks=") for e in events) else None,
            timeline.now() + 10,
        )
    lines = [event.text for event in timeline.events() if isinstance(event, LogLine)]
    assert lines.count(NOTIFY) == 50 and lines.count("[sysTest] send.") == 50
    assert "[sysRecv1] split line" in lines and "[kdtarget] done." in lines
    debug = [event.summary for event in timeline.events() if isinstance(event, DebugEvent)]
    machine = Machine.decode((STANDIN / "kd" / "kdmachine.bin").read_bytes())
    for path, base, size in machine.modules:  # the synthetic kernel's drivers, as kdtarget reports their loads
        assert f"module load: {path} at 0x{base:x} size 0x{size:x}" in debug
    assert "state change: exception 0x80000003 at 0xfffff80000401000 on cpu 0 (first chance), continued" in debug  # the script's
    assert f"state change: exception 0x80000003 at 0x{machine.pc(0):x} on cpu 0 (first chance), continued" in debug  # the bugcheck's
    crashes = [event for event in timeline.events() if isinstance(event, GuestCrash)]
    assert machine.bugcheck is not None and [(c.code, c.parameters) for c in crashes] == [machine.bugcheck]
    # Before continuing the bugcheck's break the host read the stopped kernel over the serial port: where it crashed.
    [report] = [event for event in timeline.events() if isinstance(event, StackReport)]
    drivers = [DriverModule("sysRecv1.sys", "receiver.sys", "sysRecv1"), DriverModule("sysTest.sys", "sender.sys", "sysTest")]
    images = {name: NULL_DEREF / name for name in ("receiver.sys", "sender.sys")}
    triage = analyse(report, drivers, Symbolizer(images, (), [STANDIN / "kd"]))
    assert triage.signature == "0x0000007E receiver.sys!CountNotification"
    assert triage.threads[0].frames[0].source == "receiver.c:86"
    assert "sender.sys!NotifyThread (sender.c:" in triage.chain(limit=8)
    read = next(summary for summary in debug if summary.startswith("crash stacks read:"))
    assert "cut short" not in read, read
    # The target's own view, over COM2: every packet ACKed, every stop continued, the prompt answered.
    tally = next(line for line in lines if line.startswith("kdtarget: acks="))
    fields = dict(item.split("=") for item in tally.removeprefix("kdtarget: ").split())
    assert int(fields["acks"]) >= 2 * 50 + 8 and fields["continues"] == "4" and fields["prompt_reply"] == "i", tally
    # Every request of the host was answered (version, contexts, memory), none refused.
    assert int(fields["manipulates"]) >= 3 and fields["refused"] == "0", tally
    # Breakpoints and the module load continued as handled, with the symbol range left unchanged (Continue2 start 1);
    # the debugger was there all along: nothing given up, dropped or skipped.
    assert (fields["not_handled"], fields["symbol_start"], fields["gave_up"], fields["dropped"], fields["skipped"]) == (
        "0",
        "0x1",
        "0",
        "0",
        "0",
    ), tally
    # ACKs come back at once: at most a stray packet (on a loaded 2-core machine) waited for the 0.5 s byte timeout.
    assert int(fields["retries"]) <= 2
    # The raw capture is the evidence: exactly the bytes that crossed the link. Every frame in it checks out (no damaged
    # packet, no garbage), and it replays to the very lines the live reader saw.
    raw = (tmp_path / "kd-raw.log").read_bytes()
    host = KdHost()
    replayed = host.receive(raw).events + host.close().events
    assert host.stats["resends_asked"] == 0 and host.framer.discarded == 0
    kernel_lines = [event.text for event in timeline.events() if isinstance(event, LogLine) and event.source == "kernel"]
    assert [event.text for event in replayed if isinstance(event, KdLine)] == kernel_lines
    # QEMU's own chardev log of the port holds every byte of it, in order. (Not always byte for byte the same: under
    # back-pressure QEMU's log can hold a byte twice that crossed the socket once (seen 3 times in 12 runs, the packet
    # around it intact on the link and in this capture, no RESEND): it logs a write the socket refused with EAGAIN, and
    # logs it again when the retry succeeds (QEMU chardev/char.c, qemu_chr_write_buffer).)
    assert_subsequence(raw, (tmp_path / "qemu-kd.log").read_bytes())


def assert_subsequence(part: bytes, whole: bytes) -> None:
    """Every byte of ``part`` is in ``whole``, in order (``whole`` may have more)."""
    position = 0
    for index, byte in enumerate(part):
        position = whole.find(bytes([byte]), position)
        assert position >= 0, f"byte {index} of the capture ({part[max(0, index - 20) : index + 20]!r}) is not in QEMU's log"
        position += 1
    assert len(whole) - len(part) <= 16, f"QEMU's log has {len(whole) - len(part)} more bytes than the capture"
