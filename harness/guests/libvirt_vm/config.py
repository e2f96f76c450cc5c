"""The harness configuration file (``harness.yaml``) for the libvirt guest; see harness.example.yaml.

Credentials are never in this file or on the command line: the file names an
environment variable or a file that holds the password.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.config import default_state_dir
from harness.durations import parse_duration
from harness.errors import ConfigError, ConfigFileError
from harness.secrets import Secret, load_secret
from harness.yamlfile import parse_yaml, read_text, validate

Duration = Annotated[float, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HostSettings(_Strict):
    """A VM host of the pool: a libvirt URI and how many VMs may run there at once."""

    uri: str
    slots: int = Field(default=1, ge=1, le=64)

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        return _libvirt_uri(value)


def _libvirt_uri(value: str) -> str:
    if not value.startswith(("qemu:///", "qemu+ssh://", "test:///")):
        raise ValueError("expected a libvirt URI such as qemu:///system or qemu+ssh://host/system")
    return value


class VmSettings(_Strict):
    """The VM: where libvirt is, the golden image, the hardware."""

    uri: str = "qemu:///system"
    # A pool of VM hosts, each with VM slots: scenarios run on as many VMs at once as there are slots (harness run -j).
    # Default: one slot on `uri`. Every host has the golden images at the same paths.
    hosts: list[HostSettings] = Field(default_factory=list)
    image: Path | None = None  # the golden image (or name several under `images:` at the top level)
    name_prefix: str = Field(default="kcb", pattern=r"^[a-z][a-z0-9-]{0,15}$")
    memory_mib: int = Field(default=4096, ge=128)
    vcpus: int = Field(default=2, ge=1, le=64)
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    firmware: Literal["uefi", "bios"] = "uefi"
    ovmf_code: Path = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
    ovmf_vars: Path = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
    # Overlays, saved states, serial sockets and logs of each run: somewhere QEMU (its own user) can reach, never
    # under the project (a clone in /root is closed to it). Default: the state folder's vm/ (KCB_STATE_DIR).
    work_dir: Path | None = None
    text_serial: bool = True
    hyperv: bool = True
    # true: Windows writes its crash dump and restarts, and the harness pulls the dump (crash seen over KD and
    # as the guest's reset). false: the Hyper-V crash MSRs report the bugcheck to libvirt and the VM stops
    # there, before Windows could write a dump (QEMU pauses the guest at that write).
    crash_dumps: bool = True
    dump_timeout: float = 900.0  # seconds for a crashed guest to write its dump, restart and answer again
    # At a hang the kernel debugger breaks in and reads every processor's stack (at most stacks_timeout seconds),
    # then continues (none), or makes Windows write a dump: "crash" (the debugger-initiated bugcheck 0xE2, as
    # WinDbg's .crash) or "nmi" (libvirt's injectNMI; Windows bugchecks 0x80 when NMICrashDump is set, as the image
    # recipe does); the dump is pulled like a crash's.
    hang_dump: Literal["none", "crash", "nmi"] = "none"
    stacks_timeout: float = 60.0
    ready_timeout: float = 900.0
    watchdog: float = 300.0  # seconds of serial silence with no CPU progress before a scenario is "hung"
    # The guest: Windows, or the project's Linux stand-in (tests of the VM path without Windows: a kernel booted
    # directly, plain text on COM1, POSIX commands over SSH, a service-control double; see standin-guest/).
    guest_os: Literal["windows", "standin"] = "windows"
    kernel: Path | None = None  # a kernel booted directly (with initrd and cmdline) instead of the disk's boot loader
    initrd: Path | None = None
    cmdline: str = ""

    @property
    def vm_dir(self) -> Path:
        """Where each run's VM files go: ``work_dir``, else the state folder's vm/."""
        return self.work_dir or default_state_dir() / "vm"

    @field_validator("ready_timeout", "watchdog", "dump_timeout", "stacks_timeout", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        return parse_duration(value)

    @model_validator(mode="after")
    def _direct_boot(self) -> VmSettings:
        if (self.kernel is None) != (self.initrd is None):
            raise ValueError("kernel and initrd go together")
        if self.guest_os == "standin" and self.kernel is None:
            raise ValueError("the stand-in guest boots its kernel directly: give kernel and initrd (make standin builds them)")
        return self

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        return _libvirt_uri(value)

    @property
    def golden(self) -> Path:
        """The golden image this VM starts from.

        Raises:
            ConfigError: none given (with named ``images``, a VM is for one of them: ``HarnessConfig.on``).
        """
        if self.image is None:
            raise ConfigError("no golden image for this VM (vm.image, or one of images: chosen with --image)")
        return self.image

    @property
    def pool(self) -> list[HostSettings]:
        """The VM hosts and their slots (``hosts``, else one slot on ``uri``)."""
        return self.hosts or [HostSettings(uri=self.uri, slots=1)]


class TransportSettings(_Strict):
    """How the harness reaches the guest: WinRM (pywinrm) or SSH (paramiko)."""

    type: Literal["winrm", "ssh"] = "winrm"
    username: str = Field(default="Administrator", min_length=1)
    password_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    password_file: Path | None = None
    guest_port: int = Field(default=0, ge=0, le=65535)
    host_port: int = Field(default=0, ge=0, le=65535)
    # WinRM
    scheme: Literal["http", "https"] = "http"
    auth: Literal["ntlm", "basic", "credssp"] = "ntlm"
    message_encryption: Literal["auto", "always", "never"] = "auto"
    server_cert_validation: Literal["validate", "ignore"] = "validate"
    # SSH
    known_hosts: Path | None = None
    # The name the guest's host key is filed under in known_hosts (OpenSSH's HostKeyAlias): the forwarded
    # port changes every run. null: file it under [127.0.0.1]:host_port.
    host_key_alias: str | None = Field(default="kcb-guest", pattern=r"^[A-Za-z0-9_.\[\]:-]+$")
    private_key: Path | None = None
    accept_new_host_key: bool = False
    timeout: float = 60.0

    @model_validator(mode="after")
    def _consistent(self) -> TransportSettings:
        if self.password_env is None and self.password_file is None and not (self.type == "ssh" and self.private_key):
            raise ValueError(
                "give password_env (name of an environment variable) or password_file" + (" or private_key" if self.type == "ssh" else "")
            )
        if self.type == "winrm" and self.scheme == "http" and self.auth == "basic":
            raise ValueError("basic authentication over plain http would send the password in clear: use https, or ntlm/credssp")
        if self.type == "ssh" and self.known_hosts is None and not self.accept_new_host_key:
            raise ValueError("ssh needs known_hosts (host keys are verified) or accept_new_host_key: true")
        return self

    @property
    def port(self) -> int:
        """The guest's service port."""
        if self.guest_port:
            return self.guest_port
        if self.type == "ssh":
            return 22
        return 5986 if self.scheme == "https" else 5985

    def password(self) -> Secret | None:
        """The password from its environment variable or file (None for key-only SSH).

        Raises:
            ConfigError: it is named but missing.
        """
        if self.password_env is None and self.password_file is None:
            return None
        return load_secret(self.password_env, self.password_file, "transport password")


ImageName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")]


class HarnessConfig(_Strict):
    """The whole file."""

    vm: VmSettings
    transport: TransportSettings = Field(default_factory=lambda: TransportSettings(password_env="KCB_GUEST_PASSWORD"))
    guest_dir: str = Field(default="C:\\kcb", pattern=r"^[A-Za-z]:\\[A-Za-z0-9_\\.-]*$")
    # Golden images by name (an image matrix: every scenario runs on each; `harness run --image NAME` picks some).
    images: dict[ImageName, Path] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _an_image(self) -> HarnessConfig:
        if self.vm.image is None and not self.images:
            raise ValueError("give vm.image (the golden image) or images: {name: path, ...}")
        return self

    @property
    def image_names(self) -> list[str | None]:
        """The images scenarios can run on: the named ones, else the one ``vm.image`` (None)."""
        return list(self.images) or [None]

    def on(self, uri: str, image: str | None) -> HarnessConfig:
        """This configuration for one VM of the pool: on host ``uri``, from golden image ``image`` (None: ``vm.image``).

        Raises:
            ConfigError: no such image.
        """
        if image is not None and image not in self.images:
            known = ", ".join(self.images) or "none: this configuration has only vm.image"
            raise ConfigError(f"no image named {image!r} in the configuration (images: {known})")
        path = self.images[image] if image is not None else self.vm.image
        return self.model_copy(update={"vm": self.vm.model_copy(update={"uri": uri, "image": path})})


def load_config(path: Path) -> HarnessConfig:
    """Read and validate the configuration; relative paths are taken from the file's folder.

    Raises:
        ConfigError: the file is missing.
        ConfigFileError: a field is wrong (file:line: field: message).
    """
    data, lines = parse_yaml(read_text(path, ConfigFileError), path, ConfigFileError)
    if not isinstance(data, dict):
        raise ConfigFileError(path, 1, "", "expected a mapping with vm: and transport:")
    config = validate(HarnessConfig, data, lines, path, ConfigFileError)
    base = path.parent.resolve()
    paths = ("image", "work_dir", "ovmf_code", "ovmf_vars", "kernel", "initrd")
    vm = config.vm.model_copy(update={name: base / getattr(config.vm, name) for name in paths if getattr(config.vm, name) is not None})
    images = {name: base / image for name, image in config.images.items()}
    return config.model_copy(update={"vm": vm, "images": images})
