"""KD decoder figures (run with `make bench`).

Prints:
  1. the host's decoding throughput (framing, ACK generation, line reassembly) in bytes/s and as a
     ratio to a 115200-baud serial line (8N1: 11520 bytes/s);
  2. the latency from a DbgPrint packet leaving the target emulator to its LogLine on the harness
     timeline, over a real unix socket through KdSerialReader (the in-process path).
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stats import latency_summary  # noqa: E402

from harness.kd import packets as kd  # noqa: E402
from harness.kd.emulator import KdTarget  # noqa: E402
from harness.kd.serial import Endpoint, KdSerialReader  # noqa: E402
from harness.kd.session import KdHost  # noqa: E402
from harness.kernel.events import Event, LogLine  # noqa: E402
from harness.timeline import Timeline  # noqa: E402

LINE_RATE = 115200 // 10  # bytes/s on a 115200-baud 8N1 line
SEED = [b"[sysRecv1]:get notify ulType:(1)\tulValue:(hello)\n", b"[sysTest] send.\n"]


def stream(packets: int) -> bytes:
    parts = []
    for index in range(packets):
        text = SEED[index % 2]
        payload = kd.DEBUG_IO.pack(kd.API_PRINT_STRING, 0, 0, len(text), 0) + text
        parts.append(kd.encode_data(kd.TYPE_DEBUG_IO, kd.INITIAL_ID ^ (index & 1), payload))
    return b"".join(parts)


def throughput(packets: int, rounds: int) -> tuple[float, int]:
    data = stream(packets)
    best = float("inf")
    for _ in range(rounds):
        host = KdHost()
        started = time.perf_counter()
        lines = 0
        for offset in range(0, len(data), 4096):
            lines += len(host.receive(data[offset : offset + 4096]).events)
        best = min(best, time.perf_counter() - started)
        assert lines == packets, lines
    return len(data) / best, len(data)


def latency(samples: int) -> list[float]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "kd.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(1)
        timeline = Timeline(clock=time.perf_counter)
        arrived: dict[int, float] = {}

        def on_event(event: Event) -> None:
            if isinstance(event, LogLine) and event.text.startswith("seq="):
                arrived[int(event.text[4:])] = time.perf_counter()

        timeline.add_listener(on_event)
        sent: dict[int, float] = {}
        with KdSerialReader(Endpoint.parse(f"unix:{path}"), timeline, Path(folder) / "raw.log"):
            conn, _ = listener.accept()
            target = KdTarget()
            with conn:
                for index in range(samples):
                    target.print(f"seq={index}\n")
                    sent[index] = time.perf_counter()
                    conn.sendall(target.take())
                    while not target.idle:  # the target waits for the ACK, as KDCOM does
                        target.receive(conn.recv(4096))
                    time.sleep(0.002)
            deadline = time.perf_counter() + 5
            while len(arrived) < samples and time.perf_counter() < deadline:
                threading.Event().wait(0.01)
        return [arrived[index] - sent[index] for index in sorted(arrived)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packets", type=int, default=50_000)
    parser.add_argument("--samples", type=int, default=1000)
    args = parser.parse_args()
    rate, size = throughput(args.packets, rounds=5)
    ratio = rate / LINE_RATE
    print(f"KD decoder: {rate / 1e6:.1f} MB/s over {size / 1e6:.1f} MB of DbgPrint packets = {ratio:.0f}x the 115200-baud line rate")
    print(f"KD DbgPrint packet -> timeline line (unix socket, in process): {latency_summary(latency(args.samples))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
