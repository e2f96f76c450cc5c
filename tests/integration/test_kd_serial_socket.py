"""The KD reader over real sockets, with the target emulator on the other end; replay of its capture."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from harness.kd.emulator import KdTarget
from harness.kd.serial import Endpoint, KdSerialReader, TextSerialReader
from harness.kernel.events import DebugEvent, Event, GuestCrash, LogLine
from harness.timeline import Timeline
from tests.integration.conftest import ROOT

NOTIFY = "[sysRecv1]:get notify ulType:(1)\tulValue:(hello)"


def serve_target(listener: socket.socket, script: Callable[[KdTarget], None], done: threading.Event) -> KdTarget:
    """Accept one connection and play `script` on a KdTarget over it until the target is idle."""
    target = KdTarget()
    conn, _ = listener.accept()
    conn.settimeout(0.3)
    script(target)
    with conn:
        while not target.idle:
            data = target.take()
            if data:
                conn.sendall(data)
            try:
                reply = conn.recv(65536)
            except TimeoutError:
                target.timeout()
                continue
            if not reply:
                break
            target.receive(reply)
        conn.sendall(target.take())
    done.set()
    return target


def listen(tmp_path: Path) -> tuple[socket.socket, Endpoint]:
    path = tmp_path / "kd.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    return listener, Endpoint.parse(f"unix:{path}")


def seed_script(target: KdTarget) -> None:
    target.print("[sysTest] DriverEntry status:(0x00000000).\n")
    target.load_module("\\SystemRoot\\system32\\drivers\\receiver.sys", 0xFFFFF80000400000, 0x6000)
    for _ in range(3):
        target.print(NOTIFY + "\n")
        target.print("[sysTest] send.\n")
    target.exception(0x80000003)
    target.print("[sysRecv1] Drvier unloaded.\n")


def test_reader_decodes_and_acknowledges_over_a_unix_socket(tmp_path: Path) -> None:
    listener, endpoint = listen(tmp_path)
    timeline = Timeline()
    done = threading.Event()
    results: list[KdTarget] = []
    server = threading.Thread(target=lambda: results.append(serve_target(listener, seed_script, done)))
    server.start()
    with KdSerialReader(endpoint, timeline, tmp_path / "kd-raw.log"):
        assert done.wait(30)
        timeline.wait_for(
            lambda events: True if any(isinstance(e, LogLine) and "unloaded" in e.text for e in events) else None, timeline.now() + 5
        )
    server.join(10)
    target = results[0]
    texts = [event.text for event in timeline.events() if isinstance(event, LogLine)]
    assert texts.count(NOTIFY) == 3 and texts[-1] == "[sysRecv1] Drvier unloaded."
    kinds = [event.kind for event in timeline.events() if isinstance(event, DebugEvent)]
    assert "module" in kinds and "state-change" in kinds
    assert target.log.statuses == [0x00010002, 0x00010002]  # module load and breakpoint both continued
    assert (tmp_path / "kd-raw.log").stat().st_size > 0


def test_replay_prints_the_capture_exactly(tmp_path: Path) -> None:
    listener, endpoint = listen(tmp_path)
    timeline = Timeline()
    done = threading.Event()

    def script(target: KdTarget) -> None:
        seed_script(target)
        target.bugcheck(0xD1, (0x10, 2, 0, 0xFFFFF80000401020))

    server = threading.Thread(target=serve_target, args=(listener, script, done))
    server.start()
    with KdSerialReader(endpoint, timeline, tmp_path / "kd-raw.log"):
        assert done.wait(30)
    server.join(10)
    crashes = [event for event in timeline.events() if isinstance(event, GuestCrash)]
    assert [(c.code, c.parameters) for c in crashes] == [(0xD1, (0x10, 2, 0, 0xFFFFF80000401020))]
    process = subprocess.run(
        [sys.executable, "-m", "harness", "kd", "replay", str(tmp_path / "kd-raw.log")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    out = process.stdout.splitlines()
    assert out.count(NOTIFY) == 3
    assert "#kd module load: \\SystemRoot\\system32\\drivers\\receiver.sys at 0xfffff80000400000 size 0x6000" in out
    assert "#kd bugcheck 0x000000D1 (0x10, 0x2, 0x0, 0xfffff80000401020)" in out
    assert any(line.startswith("#kd state change: exception 0x80000003") for line in out)
    live = [event.text for event in timeline.events() if isinstance(event, LogLine)]
    assert [line for line in out if not line.startswith("#kd ")] == live


def test_reader_reconnects_and_repeats_nothing(tmp_path: Path) -> None:
    listener, endpoint = listen(tmp_path)
    timeline = Timeline()
    first, second = threading.Event(), threading.Event()

    def before(target: KdTarget) -> None:
        target.print("before revert\n")
        target.exception()

    def after(target: KdTarget) -> None:
        target.print("after revert\n")
        target.exception()

    def server() -> None:
        serve_target(listener, before, first)
        serve_target(listener, after, second)

    thread = threading.Thread(target=server)
    thread.start()
    reader = KdSerialReader(endpoint, timeline, tmp_path / "kd-raw.log")
    with reader:
        assert first.wait(30) and second.wait(30)
    thread.join(10)
    texts = [event.text for event in timeline.events() if isinstance(event, LogLine)]
    assert texts == ["before revert", "after revert"]
    assert reader.connections >= 2  # a third may be under way: the listener is still there


def test_text_reader_splits_lines(tmp_path: Path) -> None:
    listener, endpoint = listen(tmp_path)
    timeline = Timeline()

    def server() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"marker one\r\nmarker ")
            conn.sendall(b"two\ttab\nno newline")

    thread = threading.Thread(target=server)
    thread.start()
    reader = TextSerialReader(endpoint, timeline, tmp_path / "com2.log", reconnect=False)
    with reader:
        thread.join(10)
        timeline.wait_for(lambda events: True if len(events) >= 3 else None, timeline.now() + 5)
    events: list[Event] = timeline.events()
    assert [e.text for e in events if isinstance(e, LogLine)] == ["marker one", "marker two\ttab", "no newline"]
    assert (tmp_path / "com2.log").read_bytes() == b"marker one\r\nmarker two\ttab\nno newline"


def test_every_connection_starts_with_a_break_in(tmp_path: Path) -> None:
    """A debugger attaching to a running target breaks in, on the first connection and on every reconnection."""
    listener, endpoint = listen(tmp_path)
    first_bytes: list[bytes] = []

    def server() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(10)
                first_bytes.append(conn.recv(1))

    thread = threading.Thread(target=server)
    thread.start()
    reader = KdSerialReader(endpoint, Timeline(), tmp_path / "kd-raw.log")
    with reader:
        assert reader.wait_connected(2)
        thread.join(10)
    assert first_bytes == [b"\x62", b"\x62"]


def test_stopping_a_reader_keeps_every_byte_that_had_arrived(tmp_path: Path) -> None:
    """The raw capture is the evidence: a reader stopped right after the other side wrote keeps all of it."""
    path = tmp_path / "text.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    payload = b"".join(b"line %06d of the guest's console output\n" % number for number in range(40_000))  # ~1.6 MB
    sent = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(payload)
            sent.set()
            sent.wait()
            threading.Event().wait(2)  # keep the connection open: the reader must not rely on an end of stream

    threading.Thread(target=serve, daemon=True).start()
    timeline = Timeline()
    reader = TextSerialReader(Endpoint.parse(f"unix:{path}"), timeline, tmp_path / "raw.log", reconnect=False)
    reader.start()
    assert sent.wait(30)
    reader.stop()  # at once: up to a socket buffer of bytes has not been read yet
    listener.close()
    assert (tmp_path / "raw.log").read_bytes() == payload
