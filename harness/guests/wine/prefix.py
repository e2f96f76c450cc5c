"""The harness's own Wine prefix: created once, with the callback shim and the agent installed.

One prefix serves one Wine session at a time, so a session holds the prefix's
lock (``flock``) from start to teardown; a second harness waits for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.errors import GuestError
from harness.guests.wine.exports import KernelInventory, load_inventory

log = logging.getLogger(__name__)

#: The Wine session's kernel-driver group: drivers of one group share one winedevice.exe.
SERVICE_GROUP = "kcbharness"
ANCHOR_SERVICE = "kcbanchor"
GUEST_DIR = "C:\\kcb"

_WINE_CANDIDATES = ("/usr/lib/wine/wine64", "/usr/bin/wine64", "/usr/lib/wine/wine")
#: Where Wine keeps its x86-64 builtin PE modules, relative to the loader (Debian's layout first, then upstream's).
_DLL_DIRS = ("../x86_64-linux-gnu/wine/x86_64-windows", "../lib/wine/x86_64-windows", "../lib64/wine/x86_64-windows", "x86_64-windows")
_AEDEBUG = r"HKLM\Software\Microsoft\Windows NT\CurrentVersion\AeDebug"
#: Bump when ensure() changes what it does to a prefix, so existing prefixes get it again.
RECIPE = 2
#: Wine's own bus drivers for the host's USB and HID devices: a scenario's session needs none, they cost CPU at every
#: session start, and wineusb's was seen to fault in IoCreateDevice during start under load (2 of 500 busy soak runs).
#: Wine starts them whatever their service's Start value says; a DLL override keeps them from loading.
UNUSED_SERVICES = ("winebus", "wineusb")
NO_DEBUGGER = r"C:\kcb\no-debugger-on-purpose.exe %ld %ld"


def install_file(source: Path, target: Path) -> None:
    """Put a copy of ``source`` at ``target`` by replacing it (a new file, never the old one rewritten in place:
    a prefix's clones share its files, and a running session may have them mapped)."""
    temporary = target.with_name(f".{target.name}.kcb-new")
    shutil.copyfile(source, temporary)
    os.replace(temporary, target)


@dataclass(frozen=True)
class WineTools:
    """The Wine loader and wineserver to use."""

    wine: Path
    wineserver: Path

    @classmethod
    def find(cls) -> WineTools:
        """Debian's wine64 (``KCB_WINE`` overrides).

        Raises:
            GuestError: Wine is not installed.
        """
        override = os.environ.get("KCB_WINE")
        candidates = [override] if override else [*_WINE_CANDIDATES, shutil.which("wine64") or ""]
        for candidate in candidates:
            if candidate and Path(candidate).is_file():
                wine = Path(candidate)
                server = wine.parent / "wineserver"
                if not server.is_file():
                    server = Path(shutil.which("wineserver") or "/nonexistent")
                if server.is_file():
                    return cls(wine=wine, wineserver=server)
        raise GuestError("Wine is not installed (need wine64 and wineserver): run `make setup`, or apt-get install wine wine64")

    def dll_dir(self) -> Path:
        """The folder of Wine's x86-64 builtin modules (ntoskrnl.exe, hal.dll, the *.sys).

        Raises:
            GuestError: not found next to the loader.
        """
        for relative in _DLL_DIRS:
            folder = (self.wine.parent / relative).resolve()
            if (folder / "ntoskrnl.exe").is_file():
                return folder
        raise GuestError(f"cannot find Wine's x86_64-windows modules next to {self.wine}: run `make setup`, or apt-get install libwine")


@dataclass(frozen=True)
class GuestFiles:
    """Build outputs the prefix needs (``make build`` puts them in build/wine/)."""

    ntoskrnl: Path  # the callback shim, installed as system32\ntoskrnl.exe
    ntoskwine: Path  # Wine's builtin ntoskrnl.exe, installed as system32\ntoskwine.dll
    agent: Path  # kcbagent.exe
    anchor: Path  # kcbanchor.sys

    @classmethod
    def in_dir(cls, folder: Path) -> GuestFiles:
        """The files in ``folder``.

        Raises:
            GuestError: one is missing (not built yet).
        """
        files = cls(
            ntoskrnl=folder / "ntoskrnl.exe",
            ntoskwine=folder / "ntoskwine.dll",
            agent=folder / "kcbagent.exe",
            anchor=folder / "kcbanchor.sys",
        )
        missing = [str(path) for path in (files.ntoskrnl, files.ntoskwine, files.agent, files.anchor) if not path.is_file()]
        if missing:
            raise GuestError(f"the Wine guest is not built ({', '.join(missing)} missing): run `make build`")
        return files

    def digest(self) -> str:
        hasher = hashlib.sha256()
        for path in (self.ntoskrnl, self.ntoskwine, self.agent, self.anchor):
            hasher.update(path.read_bytes())
        return hasher.hexdigest()


class WinePrefix:
    """A Wine prefix owned by the harness."""

    def __init__(self, root: Path, tools: WineTools, files: GuestFiles) -> None:
        self.root = root
        self.tools = tools
        self.files = files
        self._inventory: KernelInventory | None = None

    def kernel_inventory(self) -> KernelInventory:
        """What the guest's kernel implements (computed once per build and Wine, cached in the build folder).

        Raises:
            GuestError: Wine's modules cannot be found.
        """
        if self._inventory is None:
            cache = self.files.ntoskrnl.parent / "kernel-exports.json"
            self._inventory = load_inventory(cache, self.files.ntoskrnl, self.files.ntoskwine, self.tools.dll_dir(), self.tools.wine)
        return self._inventory

    @property
    def guest_dir(self) -> Path:
        """Host path of ``C:\\kcb`` (driver images, agent)."""
        return self.root / "drive_c" / "kcb"

    def env(self, debug: str = "-all", shim: bool = True) -> dict[str, str]:
        """Environment for Wine processes of this prefix.

        Args:
            debug: WINEDEBUG channels.
            shim: load the callback-object ntoskrnl (False: Wine's own, whose callback API is stubbed).
        """
        env = {key: value for key, value in os.environ.items() if not key.startswith("WINE")}
        env.update(
            WINEPREFIX=str(self.root),
            WINEDEBUG=debug,
            # mscoree/mshtml off: no Mono/Gecko install prompts (and no network) on wineboot.
            # An empty override disables a DLL: Wine's USB and HID bus drivers then fail to load at once (see UNUSED_SERVICES).
            WINEDLLOVERRIDES=f"ntoskrnl.exe={'n' if shim else 'b'};mscoree,mshtml=;{','.join(f'{s}.sys' for s in UNUSED_SERVICES)}=",
            WINEARCH="win64",
        )
        return env

    @contextlib.contextmanager
    def lock(self, timeout: float = 600.0) -> Iterator[None]:
        """Hold the prefix for one session.

        Raises:
            GuestError: another session kept it for ``timeout`` seconds.
        """
        self.root.parent.mkdir(parents=True, exist_ok=True)
        with open(self.root.parent / f"{self.root.name}.lock", "w") as handle:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise GuestError(f"the Wine prefix {self.root} is in use by another harness run") from None
                    time.sleep(0.1)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def session_pids(self) -> list[int]:
        """Live processes of this prefix's Wine session (found by their WINEPREFIX)."""
        wanted = f"WINEPREFIX={self.root}".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if wanted in (entry / "environ").read_bytes().split(b"\0") and (entry / "stat").read_text().split(") ", 1)[1][0] != "Z":
                    pids.append(int(entry.name))
            except (OSError, IndexError):
                continue
        return pids

    def kill_session(self, timeout: float = 15.0) -> None:
        """End the prefix's Wine session, if any: every process of it, whatever Wine started on its own."""
        try:
            # No pipes: a process the session started could hold them open and block us.
            subprocess.run([str(self.tools.wineserver), "-k"], env=self.env(), timeout=timeout, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            log.warning("wineserver -k did not return within %ss", timeout)
        for pid in self.session_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def end_session(self, timeout: float = 10.0) -> None:
        """End the prefix's Wine session at once: SIGKILL to every process of it, the wineserver included, and wait
        until they are gone. Faster than ``kill_session`` (``wineserver -k`` takes ~0.75 s), and the registry is not
        saved: a scenario's services and Parameters die with its session, and the next one starts from the prefix as
        prepared. (Wine saves its registry by replacing the file, so a kill never leaves half of one.)
        """
        deadline = time.monotonic() + timeout
        while pids := self.session_pids():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                log.warning("processes of the Wine session %s survived SIGKILL for %ss: %s", self.root, timeout, pids)
                return
            time.sleep(0.01)

    def run(self, args: list[str], timeout: float) -> tuple[int, str]:
        """Run a Wine program to completion; (exit code, its output). Output goes through a file, not a pipe."""
        with tempfile.TemporaryFile() as output:
            try:
                result = subprocess.run([str(self.tools.wine), *args], env=self.env(), timeout=timeout, stdin=subprocess.DEVNULL,
                                        stdout=output, stderr=output, check=False)  # fmt: skip
                code = result.returncode
            except subprocess.TimeoutExpired:
                code = -1
            output.seek(0)
            return code, output.read().decode("utf-8", "replace")

    def ensure(self) -> None:
        """Create the prefix and install the guest files, unless already done for these files.

        Raises:
            GuestError: Wine failed to initialise the prefix.
        """
        stamp = self.root / ".kcb-stamp"
        wanted = f"{self.tools.wine}\n{self.files.digest()}\nrecipe {RECIPE}\n"
        if stamp.is_file() and stamp.read_text() == wanted:
            return
        with self.lock():
            if stamp.is_file() and stamp.read_text() == wanted:
                return
            started = time.monotonic()
            if not (self.root / "system.reg").is_file():
                log.info("creating Wine prefix %s (once, ~10 s)", self.root)
                self.root.mkdir(parents=True, exist_ok=True)
                _, output = self.run(["wineboot", "--init"], timeout=300)
                self.kill_session()  # saves the registry
                if not (self.root / "system.reg").is_file():
                    raise GuestError(f"wineboot --init failed for {self.root}: {output.strip()[-500:]}")
            # A crashing driver host must just die: with the value missing Wine falls back to winedbg,
            # which can hang the run; a debugger that cannot start makes Wine give up at once.
            self.run(["reg", "add", _AEDEBUG, "/v", "Debugger", "/t", "REG_SZ", "/d", NO_DEBUGGER, "/f"], timeout=60)
            self.kill_session()
            system32 = self.root / "drive_c" / "windows" / "system32"
            install_file(self.files.ntoskrnl, system32 / "ntoskrnl.exe")
            install_file(self.files.ntoskwine, system32 / "ntoskwine.dll")
            self.guest_dir.mkdir(parents=True, exist_ok=True)
            install_file(self.files.agent, self.guest_dir / "kcbagent.exe")
            install_file(self.files.anchor, self.guest_dir / "kcbanchor.sys")
            stamp.with_name(".kcb-stamp.new").write_text(wanted)
            os.replace(stamp.with_name(".kcb-stamp.new"), stamp)
            log.info("Wine prefix ready in %.1fs", time.monotonic() - started)

    def clone(self, index: int) -> WinePrefix:
        """A prefix of its own for a session that runs beside this one's, made from this prepared prefix (``ensure`` it first).

        The clone shares the prefix's files through hard links (0.1 s instead of ~4 s for its ~700 MB) and has real
        copies of what a session writes: the registry files (Wine saves them by replacing them, too) and
        ``C:\\kcb`` (driver images). Files of a prefix are only ever replaced, never rewritten in place
        (``install_file``), so a clone never sees its base change under it. A clone is made again when the base's
        recipe or guest files change.
        """
        clone = WinePrefix(self.root.with_name(f"{self.root.name}-{index}"), self.tools, self.files)
        base_stamp = (self.root / ".kcb-stamp").read_text()
        stamp = clone.root / ".kcb-stamp"
        if stamp.is_file() and stamp.read_text() == base_stamp:
            return clone
        with clone.lock():
            if stamp.is_file() and stamp.read_text() == base_stamp:
                return clone
            clone.kill_session()
            shutil.rmtree(clone.root, ignore_errors=True)
            with self.lock():  # no session of the base writes its registry meanwhile
                shutil.copytree(self.root, clone.root, symlinks=True, copy_function=os.link)
                for private in [stamp, *clone.root.glob("*.reg"), *clone.guest_dir.iterdir()]:
                    if private.is_file() and not private.is_symlink():
                        install_file(self.root / private.relative_to(clone.root), private)
        return clone
