"""WinRM upload figures through the loopback WS-Man server with Windows' limits on (run: .venv/bin/python benchmarks/winrm_upload.py).

For a 1 MiB and a 20 MiB file: wall time and MB/s of WinRmTransport.upload
(one PowerShell command fed through stdin), SHA-256 checked, with the number
of Send requests, the largest request against MaxEnvelopeSizekb (500 KiB) and
the longest command line against cmd.exe's 8191 characters. Beside it, the
previous approach (one command per 3 KiB chunk): its command count and line
length, which cmd.exe refuses, so it has no time to show. The server and the
stand-in guest are in-process: the figures are the harness's and pywinrm's
own cost, not a Windows guest's disk or network.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.secrets import Secret  # noqa: E402
from harness.transports.commands import CMD_MAX_CHARS, MAX_ENVELOPE_KB, ps_literal, stdin_chunk_bytes  # noqa: E402
from harness.transports.winrm import WinRmTransport  # noqa: E402
from tests.integration.script_guest import ScriptGuest  # noqa: E402
from tests.integration.wsman_server import WsmanServer  # noqa: E402

OLD_CHUNK = 3 * 1024


def old_command_line(path: str) -> int:
    """Characters of one command of the previous upload (a 3 KiB chunk pasted into an -EncodedCommand script)."""
    data = base64.b64encode(bytes(OLD_CHUNK)).decode()
    script = (
        f"$bytes = [Convert]::FromBase64String('{data}')\n"
        f"New-Item -ItemType Directory -Force -Path (Split-Path -Parent {ps_literal(path)}) | Out-Null\n"
        f"$stream = [IO.File]::Open({ps_literal(path)}, [IO.FileMode]::Append, [IO.FileAccess]::Write)\n"
        "$stream.Write($bytes, 0, $bytes.Length); $stream.Close()"
    )
    encoded = base64.b64encode(script.encode("utf-16-le")).decode()
    return len(f"powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand {encoded}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[1, 20])
    args = parser.parse_args()
    password = Secret("bench-" + os.urandom(6).hex())
    remote = "C:\\kcb\\bench.sys"
    print(f"limits: cmd.exe {CMD_MAX_CHARS} characters, MaxEnvelopeSizekb {MAX_ENVELOPE_KB} ({MAX_ENVELOPE_KB * 1024} bytes)")
    print(f"stdin chunk: {stdin_chunk_bytes(MAX_ENVELOPE_KB)} bytes per Send")
    header = (
        f"{'size':>7}  {'time s':>7}  {'MB/s':>6}  {'sends':>5}  {'largest request':>15}  {'longest line':>12}  sha256   "
        f"| previous: {'commands':>8}  {'line':>6}"
    )
    print(header)
    failures = 0
    with tempfile.TemporaryDirectory() as folder:
        for mib in args.sizes_mib:
            local = Path(folder) / f"bench-{mib}.sys"
            local.write_bytes(os.urandom(mib << 20))
            guest = ScriptGuest()
            with WsmanServer("Administrator", password.reveal(), guest) as server:
                with WinRmTransport(
                    "127.0.0.1", server.port, "Administrator", password, scheme="http", auth="basic", message_encryption="never"
                ) as transport:
                    started = time.perf_counter()
                    digest = transport.upload(local, remote, 600)
                    elapsed = time.perf_counter() - started
                state = server.state
                ok = digest == hashlib.sha256(local.read_bytes()).hexdigest() == hashlib.sha256(guest.files[remote]).hexdigest()
                within = state.refused_requests == 0 and max(map(len, state.lines)) <= CMD_MAX_CHARS
                failures += not (ok and within)
                print(
                    f"{mib:>4}MiB  {elapsed:>7.2f}  {mib * 1.048576 / elapsed:>6.1f}  {state.requests.count('Send'):>5}  "
                    f"{state.largest_request:>15}  {max(map(len, state.lines)):>12}  {'ok' if ok else 'WRONG':<8} "
                    f"| previous: {-(-(mib << 20) // OLD_CHUNK):>8}  {old_command_line(remote):>6}  (over {CMD_MAX_CHARS}: refused)"
                )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
