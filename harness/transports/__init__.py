"""Transports to a guest by name; each module imports its library only when chosen."""

from __future__ import annotations

TRANSPORTS = {"winrm": "harness.transports.winrm.WinRmTransport", "ssh": "harness.transports.ssh.SshTransport"}
