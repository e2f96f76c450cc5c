"""From a Windows ISO to a golden image: an unattended install in a libvirt domain, watched until it powers off.

The domain has the test VM's hardware (q35, UEFI without Secure Boot, SATA,
the Windows clock and Hyper-V enlightenments; a TPM for Windows 11; no NIC),
the installer ISO and the answer ISO as CD-ROMs, and one serial port as a
text socket on which the first-logon script reports progress (it writes to
every port Windows has). The install ends when Windows shuts itself down; a
timeout ends it with the last progress line and a screenshot. The answer ISO
(it holds the password) is deleted afterwards. The result gets a manifest
(``<image>.manifest.json``) that records only the settings whose check
reported ``ok``; the harness checks it before it uses the image and refuses
one that lacks a setting it needs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from harness.errors import ConfigError, GuestError, HarnessError
from harness.guests.libvirt_vm.config import VmSettings
from harness.guests.libvirt_vm.host import parse_remote_uri
from harness.guests.libvirt_vm.spec import vm_spec
from harness.guests.libvirt_vm.vm import VirtualMachine, detect_accel, new_name
from harness.image.answer import PROGRESS_PREFIX, SETTINGS, ImageOptions, answer_files, expected_settings
from harness.image.iso import make_iso
from harness.image.manifest import (
    REQUIRED_SETTINGS,
    TRANSPORT_SETTINGS,
    Manifest,
    manifest_path,
)
from harness.kd.serial import Endpoint, TextSerialReader
from harness.kernel.events import Event, LogLine
from harness.secrets import Secret
from harness.timeline import Timeline

log = logging.getLogger(__name__)

KEY_ENTER = 28  # Linux keycode: "Press any key to boot from CD or DVD"


class ImageBuildError(HarnessError):
    """The installation failed or did not finish in time."""


@dataclass(frozen=True)
class BuildRequest:
    """One image build."""

    iso: Path
    out: Path
    options: ImageOptions
    password: Secret
    uri: str = "qemu:///system"
    disk_size: str = "64G"
    memory_mib: int = 4096
    vcpus: int = 2
    timeout: float = 3 * 3600.0
    work_dir: Path = Path("build/image")
    ovmf_code: Path = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
    ovmf_vars: Path = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
    openssh: Path | None = None  # the Win32-OpenSSH installer options.openssh describes (with options.ssh)
    # The Linux stand-in guest boots directly instead of the installer (tests of this flow).
    kernel: tuple[Path, Path, str] | None = None


def progress_results(lines: list[str]) -> tuple[list[str], dict[str, str]]:
    """(verified settings, failed settings -> what was found) from the first-logon script's progress lines.

    Only known settings count; one that reported both (it cannot, but a port may repeat) counts as failed.
    """
    verified: list[str] = []
    failed: dict[str, str] = {}
    for line in lines:
        if line.startswith("ok ") and line[3:] in SETTINGS and line[3:] not in verified:
            verified.append(line[3:])
        elif line.startswith("FAILED "):
            name, _, detail = line[7:].partition(": ")
            if name in SETTINGS:
                failed[name] = detail.strip()
    return [name for name in verified if name not in failed], failed


def answer_media(options: ImageOptions, password: str, openssh: Path | None) -> dict[str, bytes]:
    """Everything the answer ISO carries: the answer file, the first-logon script, the certificate, the OpenSSH installer.

    Raises:
        ConfigError: options.openssh without its file.
    """
    files = answer_files(options, password)
    if options.openssh is not None:
        if openssh is None or not openssh.is_file():
            raise ConfigError(f"the OpenSSH installer {openssh or '(none given)'} is not a file")
        files[options.openssh.file_name] = openssh.read_bytes()
    return files


def write_answers(files: dict[str, bytes], folder: Path) -> list[Path]:
    """Write ``files`` into ``folder`` (created); autounattend.xml, which holds the password, readable by its owner only."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in files.items():
        path = folder / name
        mode = 0o600 if name == "autounattend.xml" else 0o644
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), mode)  # also when the file was there before with another mode
            handle.write(content)
        written.append(path)
    return written


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def build_image(request: BuildRequest, progress: Callable[[str], None] = print) -> Manifest:
    """Install Windows unattended into ``request.out`` and write its manifest.

    Raises:
        ConfigError: missing ISO, existing output, missing firmware.
        ImageBuildError: the installation failed or timed out.
        GuestError: libvirt or QEMU failed.
    """
    if parse_remote_uri(request.uri) is not None:
        raise ConfigError(f"image build makes its ISOs and disk here: run it on the VM host itself, not through {request.uri}")
    if not request.iso.is_file():
        raise ConfigError(f"installer ISO {request.iso} not found (pass --iso with a Windows ISO of your own)")
    if request.out.exists():
        raise ConfigError(f"{request.out} already exists: remove it first (images are never overwritten)")
    if not request.ovmf_code.is_file():
        raise ConfigError(f"UEFI firmware {request.ovmf_code} not found: apt-get install ovmf")
    work = request.work_dir / new_name("kcbimage")
    work.mkdir(parents=True, exist_ok=True)
    answers = work / "answers.iso"
    make_iso(answer_media(request.options, request.password.reveal(), request.openssh), answers)
    request.out.parent.mkdir(parents=True, exist_ok=True)
    created = subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(request.out), request.disk_size], capture_output=True, text=True, check=False
    )
    if created.returncode != 0:
        answers.unlink(missing_ok=True)
        raise GuestError(f"qemu-img could not create {request.out}: {created.stderr.strip()}")
    run = work / "run"
    direct: dict[str, object] = {}
    if request.kernel is not None:  # the stand-in in the installer's place (tests of this flow)
        direct = {"kernel": request.kernel[0], "initrd": request.kernel[1], "cmdline": request.kernel[2]}
    settings = VmSettings.model_validate(
        {"uri": request.uri, "image": request.out, "memory_mib": request.memory_mib, "vcpus": request.vcpus, "firmware": "uefi",
         "ovmf_code": request.ovmf_code, "ovmf_vars": request.ovmf_vars, "hyperv": True, **direct}
    )  # fmt: skip
    accel = detect_accel()
    # One serial port (Windows may not call it COM2: the script writes to every port), an answer ISO, a TPM for Windows 11.
    spec = vm_spec(
        settings, work.name, run, accel, com1=None, com2=run / "com2.sock", cdroms=(request.iso, answers),
        tpm=request.options.windows11, owner_pid=os.getpid(),
    )  # fmt: skip
    vm = VirtualMachine(request.uri, spec, request.out, run)
    timeline = Timeline()
    lines: list[str] = []

    def on_event(event: Event) -> None:
        # The port may carry other text (firmware, a kernel console): take what follows the prefix.
        if isinstance(event, LogLine) and PROGRESS_PREFIX in event.text:
            lines.append(event.text.split(PROGRESS_PREFIX, 1)[1].strip())
            progress(f"[{timeline.now():7.0f}s] {lines[-1]}")

    timeline.add_listener(on_event)
    try:
        vm.connect()
        vm.boot(overlay=False)
        assert spec.com2 is not None
        with TextSerialReader(Endpoint.parse(f"unix:{spec.com2}"), timeline, work / "com2-progress.log"):
            vm.press_key(KEY_ENTER, seconds=30)  # "Press any key to boot from CD or DVD"
            if not vm.wait_stopped(request.timeout):
                shot = vm.screenshot(work / "timeout.ppm")
                raise ImageBuildError(
                    f"the installation did not finish within {request.timeout:g}s; last progress: {lines[-1] if lines else '(none)'}"
                    + (f"; screenshot: {shot}" if shot else "")
                )
        if "done" not in lines:
            raise ImageBuildError(
                f"Windows powered off before the first-logon script finished; last progress: {lines[-1] if lines else '(none)'}"
            )
    except BaseException:
        vm.close()
        request.out.unlink(missing_ok=True)
        raise
    finally:
        answers.unlink(missing_ok=True)  # it holds the password
    vm.close()
    build = next((line.split(" ", 1)[1] for line in lines if line.startswith("build ")), "unknown")
    verified, failed = progress_results(lines)
    expected = expected_settings(request.options)
    manifest = Manifest(
        image=request.out.name, sha256=_sha256(request.out), size=request.out.stat().st_size, edition=request.options.edition,
        locale=request.options.locale, windows_build=build, settings=[name for name in expected if name in verified],
        created=datetime.now(UTC).isoformat(timespec="seconds"), progress=lines,
        failures=[f"{name}: {detail}" for name, detail in failed.items()],
    )  # fmt: skip
    manifest.write(manifest_path(request.out))
    # What the user asked for must have been verified; the rest (updates, sample submission) only warns.
    needed = set(REQUIRED_SETTINGS) | set(TRANSPORT_SETTINGS["ssh"] if request.options.ssh else ())
    needed |= {"test-certificate"} if request.options.certificate is not None else set()
    for name in expected:
        if name not in needed and name not in manifest.settings:
            progress(f"warning: {name} not verified ({failed.get(name, 'no report')})")
    missing = [name for name in expected if name in needed and name not in manifest.settings]
    if missing:
        raise ImageBuildError(
            "Windows installed, but these settings were not verified: "
            + "; ".join(f"{name} ({failed.get(name, 'no report')})" for name in missing)
            + f". {request.out} and {manifest_path(request.out).name} are kept for inspection; the harness refuses the image"
        )
    return manifest
