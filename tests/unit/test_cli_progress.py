"""Progress lines of `harness run` from several suite workers at once stay whole lines."""

from __future__ import annotations

import io
import threading

import pytest

from harness import cli


class SlowStdout(io.StringIO):
    """A stdout where a thread's second write waits (up to 0.5 s) until every thread has written once: the moment
    when two workers say a line at once, made certain instead of left to the scheduler."""

    def __init__(self, threads: int) -> None:
        super().__init__()
        self.threads = threads
        self.writes: dict[int, int] = {}
        self.everyone_wrote = threading.Event()

    def write(self, text: str) -> int:
        ident = threading.get_ident()
        if self.writes.get(ident, 0) >= 1:
            self.everyone_wrote.wait(timeout=0.5)
        written = super().write(text)
        self.writes[ident] = self.writes.get(ident, 0) + 1
        if len(self.writes) == self.threads:
            self.everyone_wrote.set()
        return written


def test_lines_said_at_once_by_two_workers_stay_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    stdout = SlowStdout(2)
    monkeypatch.setattr("sys.stdout", stdout)
    lines = ["RUN  02-receiver-before-sender: a", "RUN  04-receiver-unloads: b"]
    threads = [threading.Thread(target=cli._say, args=(line,)) for line in lines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(stdout.getvalue().splitlines()) == sorted(lines)
