"""The embedded guest: the real driver binaries as kernel-driver services under Wine.

One scenario = one fresh Wine session on the harness's prefix. Its first
process is kcbagent.exe, so the session's services and winedevice.exe inherit
the agent's stderr, where Wine writes every DbgPrint. A reader thread copies
that stream to ``kernel-raw.log`` line by line before parsing it into events.
All drivers of a scenario run in one winedevice.exe (one service group),
kept alive for the whole session by a small anchor driver, so kernel state
lives exactly as long as the scenario.

A scenario's user-mode programs run in the same session (same wineserver),
each started by a one-shot ``kcbagent.exe run``: its stdout is the session's
kernel-log pipe (the harness keeps that pipe's write end for it), so each line
the program writes is forwarded into the one stream the drivers' DbgPrint lines
are in, in the order they were written. Its own Unix stderr is another pipe:
whatever Wine prints about the program (an unhandled exception) stays out of
the kernel log, where it would read as the driver host's crash.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from harness.driver.pe import ImageUnreadable, read_image
from harness.errors import GuestError, GuestHung
from harness.guests.base import ControlResult, DriverInstall, Guest, ProgramResult
from harness.guests.wine.imagecheck import refusal
from harness.guests.wine.log import KernelLogParser, program_result, run_end
from harness.guests.wine.prefix import ANCHOR_SERVICE, GUEST_DIR, SERVICE_GROUP, WinePrefix, install_file
from harness.kernel.events import DriverStatus, Event, GuestCrash, StackReport
from harness.timeline import Timeline
from harness.transports.commands import windows_command_line

log = logging.getLogger(__name__)

#: WINEDEBUG for the session: DbgPrint only (channel warn+debugstr).
SESSION_DEBUG = "-all,warn+debugstr"
START_TIMEOUT = 60.0
#: How long after the service manager answered the kernel's status line may still be on its way.
STATUS_GRACE = 3.0
AGENT_GRACE = 5.0
ERROR_TIMEOUT = 1460
#: Starting a one-shot Wine program in the running session, on top of its own timeout.
ONE_SHOT_GRACE = 15.0
#: How long the stack report may take to come through the kernel log after the driver host said it is done.
REPORT_GRACE = 5.0
#: A program's runner: starting it and ending the program's processes, on top of the program's timeout.
RUN_GRACE = 30.0
#: Lines of Wine's own messages about a program that are kept for its result.
RUN_DIAGNOSTICS = 20
#: Where Debian's (and upstream's) Wine keeps its 64-bit PE DLLs: to name frames in Wine's own modules.
WINE_PE_DIRS = (
    Path("/usr/lib/x86_64-linux-gnu/wine/x86_64-windows"),
    Path("/usr/lib/wine/x86_64-windows"),
    Path("/usr/lib64/wine/x86_64-windows"),
    Path("/opt/wine-stable/lib64/wine/x86_64-windows"),
)


def agent_command(*fields: str | int) -> str:
    """One agent request line. Fields are sent as data, never interpreted by a shell.

    Raises:
        ValueError: a field holds a TAB, CR or LF (which would split the request).
    """
    texts = [str(field) for field in fields]
    for text in texts:
        if any(char in text for char in "\t\r\n"):
            raise ValueError(f"agent field contains a control character: {text!r}")
    return "\t".join(texts) + "\n"


def parse_reply(line: str) -> tuple[bool, int | None, str]:
    """``ok DETAIL`` / ``err WIN32 DETAIL`` -> (ok, win32 error, detail)."""
    line = line.strip()
    if line.startswith("ok"):
        return True, None, line[3:]
    if line.startswith("err "):
        parts = line.split(" ", 2)
        try:
            code = int(parts[1])
        except (IndexError, ValueError):
            return False, None, line
        return False, code, parts[2] if len(parts) > 2 else ""
    return False, None, f"unexpected agent reply: {line!r}"


class WineGuest(Guest):
    """A Wine session with the callback shim, driven through kcbagent.exe."""

    name = "wine"
    #: WINEDEBUG of the session (benchmarks add +timestamp).
    session_debug = SESSION_DEBUG

    def __init__(self, timeline: Timeline, run_dir: Path, prefix: WinePrefix, *, shim: bool = True) -> None:
        """Args:
        shim: use the callback-object ntoskrnl; False runs on Wine's own (stubbed) callback API.
        """
        super().__init__(timeline, run_dir)
        self.prefix = prefix
        self.shim = shim
        self._lock = prefix.lock()
        self._locked = False
        self._agent: subprocess.Popen[bytes] | None = None
        self._replies: queue.Queue[str | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._raw: IO[bytes] | None = None
        self._log_writer: int | None = None  # the kernel-log pipe's write end, for programs' runners
        self._runs = 0
        self._run_ends: dict[str, str] = {}  # run id -> the runner's report, from the kernel log
        self._run_ended = threading.Condition()

    # -- lifecycle -------------------------------------------------------------------------

    def check_images(self, images: Sequence[Path]) -> list[str]:
        # Wine would load such an image and fail in ways that look like the driver's fault (a service that times
        # out, STATUS_DLL_INIT_FAILED, a stub's exception in the middle of a run): refuse it first, saying why.
        inventory = self.prefix.kernel_inventory()
        lines: list[str] = []
        for image in dict.fromkeys(images):
            try:
                line = refusal(image.name, read_image(image), inventory)
            except ImageUnreadable as error:
                line = str(error)
            if line is not None:
                lines.append(line)
        return lines

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._lock.__enter__()
        self._locked = True
        self.prefix.end_session()  # a session left over by a harness that died
        self._raw = open(self.raw_log, "wb", buffering=0)  # noqa: SIM115 - closed in stop()
        log_reader, self._log_writer = os.pipe()  # the session's stderr: the kernel log
        self._spawn(self._read_kernel_log, open(log_reader, "rb"))  # noqa: SIM115 - closed by its reader
        self._agent = subprocess.Popen(
            [str(self.prefix.tools.wine), f"{GUEST_DIR}\\kcbagent.exe"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_writer,
            env=self.prefix.env(self.session_debug, shim=self.shim),
            start_new_session=True,  # Ctrl-C reaches the harness, which tears the session down
        )
        assert self._agent.stdout is not None
        self._spawn(self._read_replies, self._agent.stdout)
        ok, code, detail = self._reply(START_TIMEOUT, "agent start")
        if not ok:
            raise GuestError(f"the Wine agent did not start: {detail} (error {code})")
        self._install_service(ANCHOR_SERVICE, f"{GUEST_DIR}\\kcbanchor.sys", {}, START_TIMEOUT)
        result = self._control("start", ANCHOR_SERVICE, START_TIMEOUT)
        if not result.ok:
            raise GuestError(f"the Wine guest's anchor driver did not load: {result.detail}")

    def stop(self) -> None:
        if self._agent is not None:
            self.prefix.end_session()
            try:
                self._agent.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self._agent.pid, signal.SIGKILL)
                self._agent.wait(timeout=10)
        if self._log_writer is not None:  # the last writer of the kernel log that is not a Wine process
            os.close(self._log_writer)
            self._log_writer = None
        # The readers drain the pipes to their end (every writer is gone now): the raw log keeps the last lines.
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()
        if self._agent is not None:
            for pipe in (self._agent.stdin, self._agent.stdout):
                if pipe is not None:
                    pipe.close()
            self._agent = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        if self._locked:
            self._locked = False
            self._lock.__exit__(None, None, None)

    # -- the Guest interface -----------------------------------------------------------------

    def install(self, driver: DriverInstall, timeout: float) -> None:
        # One file per service: the same image under two services must be two modules.
        target = self.prefix.guest_dir / f"{driver.service}.sys"
        try:
            install_file(driver.image, target)
        except OSError as error:
            raise GuestError(f"cannot copy {driver.image} into the guest: {error}") from None
        self._install_service(driver.service, f"{GUEST_DIR}\\{driver.service}.sys", driver.parameters, timeout)

    def module_name(self, driver: DriverInstall) -> str:
        return f"{driver.service}.sys"  # install() copies each image in under its service's name

    def system_images(self) -> tuple[Path, ...]:
        # The shim's build folder first: with the shim, the guest's ntoskrnl.exe is ours (ntoskwine.dll is Wine's).
        own = (self.prefix.files.ntoskrnl.parent,) if self.shim else ()
        return own + tuple(folder for folder in WINE_PE_DIRS if folder.is_dir())

    def report_stacks(self, timeout: float) -> None:
        """Ask the driver host for its threads' stacks (kcbagent.exe stacks, a one-shot process: the session's agent
        may be stuck in a StartService that never returns) and wait for the report in the kernel log."""
        started = self.timeline.now()
        code, output = self.prefix.run(
            [f"{GUEST_DIR}\\kcbagent.exe", "stacks", ANCHOR_SERVICE, str(int(timeout * 1000))], timeout + ONE_SHOT_GRACE
        )
        ok, _, detail = parse_reply(output.strip().splitlines()[-1] if output.strip() else "")
        if not ok:
            log.warning("the driver host did not report its stacks (exit %s): %s", code, detail)
            return

        def report(events: list[Event]) -> StackReport | None:
            return next((e for e in reversed(events) if isinstance(e, StackReport) and e.kind == "hang" and e.t >= started), None)

        if self.timeline.wait_for(report, self.timeline.now() + REPORT_GRACE) is None:
            log.warning("the driver host said it reported its stacks, but no report arrived")

    def load(self, service: str, timeout: float) -> ControlResult:
        return self._control("start", service, timeout)

    def run_program(self, program: Path, args: Sequence[str], timeout: float) -> ProgramResult:
        """Run ``program`` from ``C:\\kcb\\programs`` with ``kcbagent.exe run`` (see the module's docstring).

        Raises:
            GuestError: the session is not running, or the runner ended without a report.
        """
        if self._log_writer is None:
            raise GuestError("the Wine guest is not running")
        folder = self.prefix.guest_dir / "programs"
        try:
            folder.mkdir(exist_ok=True)
            install_file(program, folder / program.name)
        except OSError as error:
            raise GuestError(f"cannot copy {program} into the guest: {error}") from None
        application = f"{GUEST_DIR}\\programs\\{program.name}"
        self._runs += 1
        run_id = str(self._runs)
        request = agent_command(run_id, program.name, int(timeout * 1000), application, windows_command_line([application, *args]))
        runner = subprocess.Popen(
            [str(self.prefix.tools.wine), f"{GUEST_DIR}\\kcbagent.exe", "run"],
            stdin=subprocess.PIPE,
            stdout=self._log_writer,
            stderr=subprocess.PIPE,
            env=self.prefix.env("-all", shim=self.shim),
            start_new_session=True,
        )
        diagnostics: list[str] = []
        assert runner.stdin is not None and runner.stderr is not None
        reader = threading.Thread(target=_keep_lines, args=(runner.stderr, diagnostics), daemon=True, name="wine-run-stderr")
        reader.start()
        try:
            with contextlib.suppress(BrokenPipeError):
                runner.stdin.write(request.encode())
                runner.stdin.close()
            report = self._await_run(run_id, runner, timeout + RUN_GRACE)
        finally:
            if runner.poll() is None:  # it did not report in time: its job object ends the program with it
                os.killpg(runner.pid, signal.SIGKILL)
            runner.wait(timeout=10)
            reader.join(timeout=10)
            runner.stderr.close()
        if report is None:
            if runner.returncode is not None and runner.returncode < 0:
                return ProgramResult(exit_code=None, timed_out=True, detail="its runner did not report in time and was killed")
            raise GuestError(
                f"the program runner for {program.name} exited ({runner.returncode}) without a report: {' | '.join(diagnostics)[:300]}"
            )
        return program_result(report, diagnostics)

    def _await_run(self, run_id: str, runner: subprocess.Popen[bytes], timeout: float) -> str | None:
        """The runner's report from the kernel log; None when the runner exited without one or ``timeout`` passed."""
        deadline = self.timeline.now() + timeout
        exited_at: float | None = None
        with self._run_ended:
            while run_id not in self._run_ends:
                self.timeline.check_cancelled()
                now = self.timeline.now()
                if exited_at is None and runner.poll() is not None:
                    exited_at = now  # its last lines may still be in the pipe: a moment for the reader
                if now > deadline or (exited_at is not None and now > exited_at + STATUS_GRACE):
                    return None
                self._run_ended.wait(timeout=0.1)
            return self._run_ends.pop(run_id)

    def unload(self, service: str, timeout: float) -> ControlResult:
        return self._control("stop", service, timeout)

    # -- helpers ---------------------------------------------------------------------------------

    def _install_service(self, service: str, image: str, parameters: Mapping[str, int | str], timeout: float) -> None:
        self._request(timeout, "install", service, SERVICE_GROUP, image)
        self._request(timeout, "clearparams", service)
        for name, value in parameters.items():
            if isinstance(value, int):
                self._request(timeout, "param", service, name, "dword", value)
            else:
                self._request(timeout, "param", service, name, "sz", value)

    def _request(self, timeout: float, *fields: str | int) -> str:
        ok, code, detail = self._send(timeout, *fields)
        if not ok:
            raise GuestError(f"guest agent: {' '.join(str(f) for f in fields[:2])} failed: {detail} (error {code})")
        return detail

    def _send(self, timeout: float, *fields: str | int) -> tuple[bool, int | None, str]:
        if self._agent is None or self._agent.stdin is None:
            raise GuestError("the Wine guest is not running")
        try:
            self._agent.stdin.write(agent_command(*fields).encode())
            self._agent.stdin.flush()
        except (BrokenPipeError, OSError) as error:
            raise GuestError(f"the Wine guest agent is gone: {error}") from None
        return self._reply(timeout, " ".join(str(field) for field in fields[:2]))

    def _reply(self, timeout: float, what: str) -> tuple[bool, int | None, str]:
        deadline = self.timeline.now() + timeout
        started = self.timeline.now()
        while True:
            try:
                line = self._replies.get(timeout=0.05)
            except queue.Empty:
                self.timeline.check_cancelled()
                if self._crashed_since(started):
                    return False, None, "the guest crashed"
                if self.timeline.now() > deadline:
                    raise GuestHung(f"the Wine guest did not answer '{what}' within {timeout:g}s") from None
                continue
            if line is None:
                code = None
                if self._agent is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        code = self._agent.wait(timeout=2)
                raise GuestError(f"the Wine guest agent exited (exit status {code}) during '{what}'; its stderr is in {self.raw_log}")
            return parse_reply(line)

    def _crashed_since(self, t: float) -> bool:
        return any(isinstance(event, GuestCrash) and event.t >= t for event in self.timeline.events())

    def _control(self, verb: str, service: str, timeout: float) -> ControlResult:
        started = self.timeline.now()
        # The agent gives up after `timeout`; its answer gets a little longer to arrive.
        ok, win32, detail = self._send(timeout + AGENT_GRACE, verb, service, int(timeout * 1000))
        if win32 == ERROR_TIMEOUT:
            raise GuestHung(f"{verb} {service}: the service did not leave its pending state within {timeout:g}s")
        action = "load" if verb == "start" else "unload"

        def status_event(events: list[Event]) -> DriverStatus | GuestCrash | None:
            for event in reversed(events):
                if event.t < started:
                    break
                if isinstance(event, DriverStatus) and event.action == action and event.service.lower() == service.lower():
                    return event
                if isinstance(event, GuestCrash):
                    return event
            return None

        # Drivers that never reached the kernel's loader (no such service) have no status line.
        grace = STATUS_GRACE if win32 not in (1060, 1062) else 0.0
        found = self.timeline.wait_for(status_event, self.timeline.now() + grace)
        status = found.status if isinstance(found, DriverStatus) else None
        if isinstance(found, GuestCrash):
            return ControlResult(ok=False, status=None, win32=win32, detail=f"guest crashed: {found.summary}")
        return ControlResult(ok=ok, status=status, win32=win32, detail=detail)

    def _spawn(self, target: Callable[[IO[bytes]], None], pipe: IO[bytes]) -> None:
        thread = threading.Thread(target=target, args=(pipe,), daemon=True, name=f"wine-{getattr(target, '__name__', '')}")
        thread.start()
        self._threads.append(thread)

    def _read_kernel_log(self, pipe: IO[bytes]) -> None:
        parser = KernelLogParser()
        with pipe:
            for raw in iter(pipe.readline, b""):
                if self._raw is not None:
                    self._raw.write(raw)  # before parsing: a parser fault never loses evidence
                text = raw.decode("utf-8", errors="replace")
                ended = run_end(text)
                if ended is not None:
                    with self._run_ended:
                        self._run_ends[ended[0]] = ended[1]
                        self._run_ended.notify_all()
                    continue
                for event in parser.feed(text, self.timeline.now()):
                    self.timeline.append(event)

    def _read_replies(self, pipe: IO[bytes]) -> None:
        for raw in iter(pipe.readline, b""):
            text = raw.decode("utf-8", errors="replace")
            if text.startswith(("ok", "err ")):
                self._replies.put(text)
        self._replies.put(None)


def _keep_lines(pipe: IO[bytes], lines: list[str]) -> None:
    """Read ``pipe`` to its end, keeping its last RUN_DIAGNOSTICS lines (Wine's messages about a program)."""
    for raw in iter(pipe.readline, b""):
        lines.append(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
        del lines[:-RUN_DIAGNOSTICS]
