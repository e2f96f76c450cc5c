"""Can QEMU reach the VM's files? Checked before a VM starts, so the error names the path and the fix.

libvirt's system instance runs QEMU as its own user (Debian: ``libvirt-qemu``,
``user =`` in ``/etc/libvirt/qemu.conf``). It relabels the files it is given
(disk, backing image, kernel, ISOs) for that user, but cannot make a folder on
the way passable: a project cloned into ``/root`` (mode 0700) or a home
folder gives "Cannot access storage file ... Permission denied" at start.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from harness.config import default_state_dir
from harness.errors import ConfigError, GuestError
from harness.guests.libvirt_vm.host import VmHost

log = logging.getLogger(__name__)

QEMU_CONF = Path("/etc/libvirt/qemu.conf")
DEFAULT_QEMU_USER = "libvirt-qemu"  # Debian's build of libvirt
_USER = re.compile(r'^\s*user\s*=\s*"([^"]+)"', re.MULTILINE)


def qemu_user(conf: str, default: str = DEFAULT_QEMU_USER) -> str:
    """The user QEMU runs as, from qemu.conf's text (its ``user = "..."``, else the build's default). Pure."""
    match = _USER.search(conf)
    return match.group(1) if match else default


def folders_on_the_way(paths: Iterable[Path]) -> list[str]:
    """Every folder a process must pass through to reach ``paths`` (absolute), outermost first, each once. Pure."""
    folders: list[str] = []
    for path in paths:
        parts = PurePosixPath(path).parents
        for folder in reversed(parts):
            if str(folder) not in folders:
                folders.append(str(folder))
    return folders


# One command on the VM host: the first existing folder the QEMU user cannot pass through, if any (a folder that does
# not exist yet is made by the harness, open to it).
_PROBE = 'for d; do [ -e "$d" ] || continue; test -x "$d" || { echo "$d"; exit 0; }; done'


def check_reachable(host: VmHost, uri: str, paths: Iterable[Path]) -> None:
    """Refuse to start a VM whose files QEMU (as its own user) cannot reach.

    Only for libvirt's system instance, and only where the harness is root on the VM host (it asks the
    kernel as that user, so ACLs count); anywhere else QEMU runs as the calling user.

    Raises:
        ConfigError: a folder on the way to one of ``paths`` is closed to QEMU's user (naming both and the fix).
    """
    if not uri.rstrip("/").endswith("/system"):
        return
    wanted = [path for path in paths if path.is_absolute()]
    try:
        if host.run(["id", "-u"]).strip() != "0":
            return
        user = qemu_user(host.read_text(QEMU_CONF))
        if user in ("root", "+0"):
            return
        host.run(["id", "-u", user])
        blocked = host.run(["runuser", "-u", user, "--", "sh", "-c", _PROBE, "sh", *folders_on_the_way(wanted)]).strip()
    except GuestError as error:  # no such user, no runuser: nothing to check with
        log.debug("cannot check what QEMU can reach on %s: %s", host.name, error)
        return
    if blocked:
        files = ", ".join(str(path) for path in wanted if PurePosixPath(path).is_relative_to(blocked))
        raise ConfigError(
            f"QEMU runs as {user} and cannot pass through {blocked} to reach {files}: keep the VM's files where it can "
            f"(the default state folder {default_state_dir()}, or KCB_STATE_DIR / vm.work_dir; a golden image e.g. under "
            f"{default_state_dir() / 'images'}), or let it through: setfacl -m u:{user}:x {blocked}"
        )
