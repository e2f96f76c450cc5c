"""A stand-in for powershell.exe behind the loopback WS-Man server: the few script shapes the harness sends.

It runs them on an in-memory disk and answers anything else "unsupported script", so a change in the shape of
a harness script fails the tests until this stand-in (and the reasoning about what PowerShell does) follows.
"""

from __future__ import annotations

import base64
import hashlib
import re

ENCODED = re.compile(r"^powershell\.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand ([A-Za-z0-9+/=]+)$")
LITERAL = r"'((?:[^']|'')*)'"
# The upload script, line for line (harness.transports.commands.upload_script): any change of shape is "unsupported".
UPLOAD = re.compile(
    "\n".join(
        [
            r"begin \{",
            r"  \$ErrorActionPreference = 'Stop'",
            rf"  \$path = {LITERAL}",
            r"  New-Item -ItemType Directory -Force -Path \(Split-Path -Parent \$path\) \| Out-Null",
            r"  \$sha = \[Security\.Cryptography\.SHA256\]::Create\(\)",
            r"  \$file = \[IO\.File\]::Create\(\$path\)",
            r"\}",
            r"process \{",
            r"  \$bytes = \[Convert\]::FromBase64String\(\$input\)",
            r"  \[void\]\$sha\.TransformBlock\(\$bytes, 0, \$bytes\.Length, \$bytes, 0\)",
            r"  \$file\.Write\(\$bytes, 0, \$bytes\.Length\)",
            r"\}",
            r"end \{",
            r"  \[void\]\$sha\.TransformFinalBlock\(\(New-Object byte\[\] 0\), 0, 0\)",
            r"  \$file\.Close\(\)",
            r"  \[BitConverter\]::ToString\(\$sha\.Hash\)\.Replace\('-', ''\)\.ToLowerInvariant\(\)",
            r"\}",
        ]
    )
)


class ScriptGuest:
    """Runs the handful of PowerShell shapes the harness sends, on an in-memory disk.

    A stand-in for powershell.exe: it understands exactly the scripts the harness builds (an upload fed
    through stdin, a chunk read, a hash, a test echo) and answers anything else "unsupported script".
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.lines: list[str] = []

    def __call__(self, line: str, stdin: bytes = b"") -> tuple[bytes, bytes, int] | None:
        self.lines.append(line)
        match = ENCODED.match(line)
        if not match:
            return b"", b"not an encoded PowerShell command\r\n", 1
        script = base64.b64decode(match.group(1)).decode("utf-16-le")
        if upload := UPLOAD.fullmatch(script):
            # powershell.exe hands each stdin line to the process block as $input.
            path = upload.group(1).replace("''", "'")
            try:
                data = b"".join(base64.b64decode(chunk, validate=True) for chunk in stdin.split(b"\r\n") if chunk)
            except ValueError:
                return b"", b'Exception calling "FromBase64String": not a valid Base-64 string\r\n', 1
            self.files[path] = data
            return hashlib.sha256(data).hexdigest().encode() + b"\r\n", b"", 0
        if read := re.search(rf"\[IO\.File\]::OpenRead\({LITERAL}\); \[void\]\$stream\.Seek\((\d+), 'Begin'\)", script):
            path = read.group(1).replace("''", "'")
            size = int(re.search(r"New-Object byte\[\] (\d+)", script).group(1))  # type: ignore[union-attr]
            offset = int(read.group(2))
            return base64.b64encode(self.files[path][offset : offset + size]) + b"\r\n", b"", 0
        if hashed := re.fullmatch(rf"\(Get-FileHash -Algorithm SHA256 -LiteralPath {LITERAL}\)\.Hash\.ToLower\(\)", script):
            path = hashed.group(1).replace("''", "'")
            if path not in self.files:
                return b"", b"file not found\r\n", 1
            return hashlib.sha256(self.files[path]).hexdigest().encode() + b"\r\n", b"", 0
        if written := re.fullmatch(rf"Write-Output {LITERAL}; exit (\d+)", script):
            return written.group(1).replace("''", "'").encode() + b"\r\n", b"", int(written.group(2))
        return b"", b"unsupported script\r\n", 1
