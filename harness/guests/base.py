"""What every guest offers the runner: install, load and unload drivers, run user-mode programs, and a kernel log.

A guest is a context manager for one scenario: ``__enter__`` gives a fresh
kernel (new Wine session, reverted VM snapshot), ``__exit__`` tears it down on
every path. While it runs, it appends kernel events (``harness.kernel.events``)
to the scenario's Timeline and writes the raw log to disk as it arrives.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from harness.timeline import Timeline
from harness.triage.dumpfile import DumpHeader


@dataclass(frozen=True)
class DriverInstall:
    """A driver image to put into the guest as a kernel-driver service with Parameters."""

    service: str
    image: Path
    parameters: Mapping[str, int | str] = field(default_factory=dict)


@dataclass(frozen=True)
class ControlResult:
    """The outcome of a load or unload.

    ``status`` is the NTSTATUS the kernel returned (DriverEntry's result for a
    load) when the guest could see it; ``win32`` the service manager's error.
    """

    ok: bool
    status: int | None
    win32: int | None
    detail: str


@dataclass(frozen=True)
class ProgramResult:
    """How a user-mode program run in the guest ended.

    ``exit_code`` is its exit code (a DWORD) when it exited by itself; None when it was ended at its timeout
    (``timed_out``, with every process it started) or could not be started (``detail`` says why). ``detail`` may also
    carry what the guest said about the program (Wine's report of an unhandled exception).
    """

    exit_code: int | None
    timed_out: bool = False
    detail: str = ""


@dataclass(frozen=True)
class CrashEvidence:
    """What a guest left behind about a crash: files pulled out of it (dumps) and one line on how that went.

    ``headers``: what each dump's own header says (a kernel dump's DUMP_HEADER64, read on this host).
    """

    files: tuple[Path, ...] = ()
    note: str = ""
    headers: tuple[DumpHeader, ...] = ()


class Guest(ABC):
    """One fresh guest for one scenario."""

    #: The name users pick it by (``--guest``).
    name: str = ""
    #: Whether scenarios with ``verifier:`` can run here (Driver Verifier is a Windows kernel feature).
    supports_verifier: bool = False

    def __init__(self, timeline: Timeline, run_dir: Path) -> None:
        self.timeline = timeline
        self.run_dir = run_dir
        #: Driver Verifier setting for this scenario ("standard", flags, or None), with the images it covers.
        self.verifier: tuple[str | int, tuple[str, ...]] | None = None
        self._early: threading.Thread | None = None
        self._early_error: BaseException | None = None
        #: Set once this guest's start has ended, up or failed (or, set by a pool, once it will never start). A pool
        #: starts the next guest only then: a start nobody waits for yet must not share the CPU with one a scenario waits for.
        self.start_settled = threading.Event()
        #: Set by a pool: hands ``stop`` to it at the end of ``with guest:`` instead of calling it there.
        self.stop_later: Callable[[Callable[[], None]], None] | None = None

    @property
    def location(self) -> str:
        """Where this guest runs, for the reports (a VM host's libvirt URI; "" for this machine)."""
        return ""

    @property
    def raw_log(self) -> Path:
        """The kernel log exactly as the guest produced it, written as it arrives."""
        return self.run_dir / "kernel-raw.log"

    def check_images(self, images: Sequence[Path]) -> list[str]:
        """Before anything loads: one line per driver image this guest cannot run (empty: it can run them all).

        Called before ``start``; a guest that can load whatever Windows loads keeps this default.
        """
        return []

    @abstractmethod
    def start(self) -> None:
        """Bring up a fresh guest.

        Raises:
            GuestError: it did not come up.
        """

    @abstractmethod
    def install(self, driver: DriverInstall, timeout: float) -> None:
        """Copy the image in and (re)create its service and Parameters.

        Raises:
            GuestError, GuestHung: the guest refused or did not answer.
        """

    @abstractmethod
    def load(self, service: str, timeout: float) -> ControlResult:
        """Start the driver's service and report what DriverEntry returned.

        Raises:
            GuestHung: no answer within ``timeout`` seconds.
        """

    @abstractmethod
    def unload(self, service: str, timeout: float) -> ControlResult:
        """Stop the driver's service (DriverUnload runs).

        Raises:
            GuestHung: no answer within ``timeout`` seconds.
        """

    @abstractmethod
    def run_program(self, program: Path, args: Sequence[str], timeout: float) -> ProgramResult:
        """Copy ``program`` (a file on this machine) into the guest and run it there with ``args``, for at most
        ``timeout`` seconds; at the timeout it is ended with every process it started.

        Each line it writes joins the timeline as a LogLine from ``program_source(program.name, "stdout")`` (or
        ``"stderr"``), no later than this returns.

        Raises:
            GuestError: the guest could not run it (its session or transport broke).
            GuestHung: the guest did not answer.
        """

    def module_name(self, driver: DriverInstall) -> str:
        """The file name the guest's module list gives ``driver``'s image (to tell its frames in a stack)."""
        return driver.image.name

    def system_images(self) -> tuple[Path, ...]:
        """Host folders with the guest's own images (kernel, libraries), to name frames outside the drivers."""
        return ()

    def report_stacks(self, timeout: float) -> None:
        """After a hang, while the guest still runs: have it report its threads' stacks (a ``StackReport`` on the
        timeline) within about ``timeout`` seconds; never raises. The default has no way to ask."""
        del timeout

    def hold_failed(self, why: str) -> None:
        """``--keep-failed``: before a failed scenario's guest is torn down, hold it for a developer until released
        (the VM guest serves its kernel debugger link); never raises. The default has nothing to hold."""
        del why

    def collect_hang_evidence(self, dest: Path) -> CrashEvidence:
        """After ``report_stacks`` at a hang: pull the dump the guest was made to write for it, if it was; never raises."""
        return CrashEvidence()

    def collect_crash_evidence(self, dest: Path) -> CrashEvidence:
        """After a crash: pull what the guest wrote about it (a crash dump) into ``dest``; never raises.

        A guest that restarts after a crash is waited for. The default has nothing to pull.
        """
        return CrashEvidence()

    @abstractmethod
    def stop(self) -> None:
        """Tear everything down; safe to call twice and after a failed start."""

    def start_early(self, after: Callable[[], None] | None = None) -> None:
        """Begin ``start`` in a background thread (a warm pool), once ``after()`` returns, so ``with guest:`` finds it started.

        ``with guest:`` then waits for it and raises what it raised; ``discard`` ends a guest that is never used.
        """
        self._early = threading.Thread(target=self._start_early, args=(after,), daemon=True, name=f"start-{self.name}")
        self._early.start()

    def _start_early(self, after: Callable[[], None] | None) -> None:
        try:
            if after is not None:
                after()
            self.start()
        except BaseException as error:  # handed to whoever enters the guest
            self._early_error = error
            self.stop()
        finally:
            self.start_settled.set()

    def discard(self) -> None:
        """End a guest that was started early but will not be used (a suite that was interrupted)."""
        if self._early is not None:
            self._early.join()
        self.stop()

    def __enter__(self) -> Guest:
        if self._early is not None:
            self._early.join()
            if self._early_error is not None:
                raise self._early_error
            return self
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        finally:
            self.start_settled.set()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if self.stop_later is not None:
            self.stop_later(self.stop)  # a pool tears it down while the next scenario runs
        else:
            self.stop()
