"""The Windows answer file (autounattend.xml) and first-logon script of the golden image. Pure.

Both are built from data: the XML with ElementTree (so a password or name
cannot break out of its element), the PowerShell with single-quoted literals
(harness.transports.commands.ps_literal). The first-logon script turns on
what the harness needs (WinRM, optionally OpenSSH; test-signing; serial
kernel debugging; the DbgPrint filter; small memory dumps with automatic restart; the
test certificate), quietens Windows Update and Defender's sample
submission, reports progress on COM2 and shuts the machine down.
"""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from harness.transports.commands import ps_literal

UNATTEND_NS = "urn:schemas-microsoft-com:unattend"
WCM_NS = "http://schemas.microsoft.com/WMIConfig/2002/State"
FIRST_LOGON = "kcb-firstlogon.ps1"
PROGRESS_PREFIX = "kcb-image:"
FILTER = "'HKLM:\\SYSTEM\\CurrentControlSet\\Control\\Session Manager\\Debug Print Filter'"
CRASH = "'HKLM:\\SYSTEM\\CurrentControlSet\\Control\\CrashControl'"

EDITIONS = (
    "Windows 10 Pro",
    "Windows 10 Enterprise",
    "Windows 10 Enterprise Evaluation",
    "Windows 11 Pro",
    "Windows 11 Enterprise",
    "Windows 11 Enterprise Evaluation",
    "Windows Server 2019 SERVERSTANDARD",
    "Windows Server 2019 SERVERDATACENTER",
    "Windows Server 2022 SERVERSTANDARD",
    "Windows Server 2022 SERVERDATACENTER",
)


@dataclass(frozen=True)
class ImageOptions:
    """What the user chose for the image."""

    edition: str
    locale: str = "en-US"
    timezone: str = "UTC"
    computer_name: str = "KCB-TEST"
    username: str = "Administrator"
    product_key: str | None = None
    ssh: bool = False
    certificate: bytes | None = None  # DER or PEM of the test-signing CA

    def __post_init__(self) -> None:
        if self.edition not in EDITIONS:
            raise ValueError(f"unknown edition {self.edition!r}; known: {', '.join(EDITIONS)}")
        if not re.fullmatch(r"[a-z]{2,3}-[A-Z]{2}", self.locale):
            raise ValueError(f"locale {self.locale!r}: expected a form like en-US")
        if not re.fullmatch(r"[A-Za-z0-9-]{1,15}", self.computer_name):
            raise ValueError(f"computer name {self.computer_name!r}: 1-15 letters, digits or '-'")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,20}", self.username):
            raise ValueError(f"user name {self.username!r}: 1-20 letters, digits, '_', '.', '-'")
        if self.product_key is not None and not re.fullmatch(r"([A-Z0-9]{5}-){4}[A-Z0-9]{5}", self.product_key):
            raise ValueError("product key: expected XXXXX-XXXXX-XXXXX-XXXXX-XXXXX")

    @property
    def windows11(self) -> bool:
        return self.edition.startswith("Windows 11")

    @property
    def server(self) -> bool:
        return self.edition.startswith("Windows Server")


def _el(parent: ET.Element, tag: str, text: str | None = None, **attributes: str) -> ET.Element:
    element = ET.SubElement(
        parent, f"{{{UNATTEND_NS}}}{tag}", {(f"{{{WCM_NS}}}{k[4:]}" if k.startswith("wcm_") else k): v for k, v in attributes.items()}
    )
    if text is not None:
        element.text = text
    return element


def _component(settings: ET.Element, name: str) -> ET.Element:
    return _el(
        settings,
        "component",
        name=name,
        processorArchitecture="amd64",
        publicKeyToken="31bf3856ad364e35",
        language="neutral",
        versionScope="nonSxS",
    )


def _command(parent: ET.Element, tag: str, order: int, text: str, element: str = "Path") -> None:
    command = _el(parent, tag, wcm_action="add")
    _el(command, "Order", str(order))
    _el(command, element, text)


def autounattend_xml(options: ImageOptions, password: str) -> str:
    """The answer file: UEFI/GPT disk layout, the edition, no OOBE, Administrator autologon once, first-logon script."""
    ET.register_namespace("", UNATTEND_NS)
    ET.register_namespace("wcm", WCM_NS)
    root = ET.Element(f"{{{UNATTEND_NS}}}unattend")

    pe = _el(root, "settings", **{"pass": "windowsPE"})
    international = _component(pe, "Microsoft-Windows-International-Core-WinPE")
    _el(_el(international, "SetupUILanguage"), "UILanguage", options.locale)
    for tag in ("InputLocale", "SystemLocale", "UILanguage", "UserLocale"):
        _el(international, tag, options.locale)
    setup = _component(pe, "Microsoft-Windows-Setup")
    if options.windows11:
        run = _el(setup, "RunSynchronous")
        for order, check in enumerate(("BypassTPMCheck", "BypassSecureBootCheck", "BypassRAMCheck"), start=1):
            _command(run, "RunSynchronousCommand", order, f"reg add HKLM\\SYSTEM\\Setup\\LabConfig /v {check} /t REG_DWORD /d 1 /f")
    disk = _el(_el(setup, "DiskConfiguration"), "Disk", wcm_action="add")
    _el(disk, "DiskID", "0")
    _el(disk, "WillWipeDisk", "true")
    create = _el(disk, "CreatePartitions")
    for order, (kind, size) in enumerate((("EFI", "100"), ("MSR", "16"), ("Primary", None)), start=1):
        partition = _el(create, "CreatePartition", wcm_action="add")
        _el(partition, "Order", str(order))
        _el(partition, "Type", kind)
        if size is None:
            _el(partition, "Extend", "true")
        else:
            _el(partition, "Size", size)
    modify = _el(disk, "ModifyPartitions")
    for order, (number, fmt, label, letter) in enumerate(((1, "FAT32", "System", None), (3, "NTFS", "Windows", "C")), start=1):
        partition = _el(modify, "ModifyPartition", wcm_action="add")
        _el(partition, "Order", str(order))
        _el(partition, "PartitionID", str(number))
        _el(partition, "Format", fmt)
        _el(partition, "Label", label)
        if letter:
            _el(partition, "Letter", letter)
    image = _el(_el(setup, "ImageInstall"), "OSImage")
    metadata = _el(_el(image, "InstallFrom"), "MetaData", wcm_action="add")
    _el(metadata, "Key", "/IMAGE/NAME")
    _el(metadata, "Value", options.edition)
    target = _el(image, "InstallTo")
    _el(target, "DiskID", "0")
    _el(target, "PartitionID", "3")
    user_data = _el(setup, "UserData")
    _el(user_data, "AcceptEula", "true")
    if options.product_key:
        _el(_el(user_data, "ProductKey"), "Key", options.product_key)

    specialize = _el(root, "settings", **{"pass": "specialize"})
    _el(_component(specialize, "Microsoft-Windows-Shell-Setup"), "ComputerName", options.computer_name)

    oobe_pass = _el(root, "settings", **{"pass": "oobeSystem"})
    shell = _component(oobe_pass, "Microsoft-Windows-Shell-Setup")
    oobe = _el(shell, "OOBE")
    for tag, value in (
        ("HideEULAPage", "true"), ("HideOEMRegistrationScreen", "true"), ("HideOnlineAccountScreens", "true"),
        ("HideWirelessSetupInOOBE", "true"), ("ProtectYourPC", "3"), ("SkipMachineOOBE", "true"), ("SkipUserOOBE", "true"),
    ):  # fmt: skip
        _el(oobe, tag, value)
    accounts = _el(shell, "UserAccounts")
    admin_password = _el(accounts, "AdministratorPassword")
    _el(admin_password, "Value", password)
    _el(admin_password, "PlainText", "true")
    logon = _el(shell, "AutoLogon")
    logon_password = _el(logon, "Password")
    _el(logon_password, "Value", password)
    _el(logon_password, "PlainText", "true")
    _el(logon, "Enabled", "true")
    _el(logon, "LogonCount", "1")
    _el(logon, "Username", "Administrator")
    commands = _el(shell, "FirstLogonCommands")
    script = FIRST_LOGON
    _command(
        commands, "SynchronousCommand", 1,
        f"cmd /c for %d in (D E F G H I) do if exist %d:\\{script} powershell -NoProfile -ExecutionPolicy Bypass -File %d:\\{script}",
        element="CommandLine",
    )  # fmt: skip
    _el(shell, "TimeZone", options.timezone)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def first_logon_script(options: ImageOptions) -> str:
    """The PowerShell the answer file runs once at the first logon; ends by shutting Windows down."""
    lines = [
        "$ErrorActionPreference = 'Continue'",
        "Start-Transcript -Path 'C:\\kcb-firstlogon.log' -Force | Out-Null",
        "function Report([string]$text) {",
        "  try { $port = New-Object System.IO.Ports.SerialPort 'COM2', 115200; $port.Open(); $port.WriteLine("
        + ps_literal(PROGRESS_PREFIX + " ")
        + " + $text); $port.Close() } catch { }",
        "}",
        "Report ('build ' + [Environment]::OSVersion.Version.Build)",
        "Get-NetConnectionProfile | Set-NetConnectionProfile -NetworkCategory Private",
        "& winrm quickconfig -quiet -force",
        "Set-Service -Name WinRM -StartupType Automatic",
        "Report 'winrm enabled'",
    ]
    if options.ssh:
        lines += [
            "Add-WindowsCapability -Online -Name OpenSSH.Server~~~~0.0.1.0 | Out-Null",
            "Set-Service -Name sshd -StartupType Automatic",
            "Start-Service sshd",
            "Report 'openssh enabled'",
        ]
    lines += [
        "& bcdedit /set testsigning on",
        "& bcdedit /debug on",
        "& bcdedit /dbgsettings serial debugport:1 baudrate:115200",
        f"New-Item -Path {FILTER} -Force | Out-Null",
        f"Set-ItemProperty -Path {FILTER} -Name 'DEFAULT' -Type DWord -Value 0xF",
        # A small memory dump (3) into %SystemRoot%\\Minidump, then a restart (AutoReboot 1): the harness pulls the dump
        # once the guest answers again (harness.guests.libvirt_vm.dumps).
        f"Set-ItemProperty -Path {CRASH} -Name 'CrashDumpEnabled' -Type DWord -Value 3",
        f"Set-ItemProperty -Path {CRASH} -Name 'AutoReboot' -Type DWord -Value 1",
        f"Set-ItemProperty -Path {CRASH} -Name 'MinidumpDir' -Type ExpandString -Value '%SystemRoot%\\Minidump'",
        "Report 'test-signing, kernel debugging and crash dumps configured'",
    ]
    if options.certificate is not None:
        encoded = base64.b64encode(options.certificate).decode("ascii")
        lines += [
            f"[IO.File]::WriteAllBytes('C:\\kcb-test-ca.cer', [Convert]::FromBase64String('{encoded}'))",
            "& certutil -addstore -f Root 'C:\\kcb-test-ca.cer' | Out-Null",
            "& certutil -addstore -f TrustedPublisher 'C:\\kcb-test-ca.cer' | Out-Null",
            "Report 'test certificate imported'",
        ]
    lines += [
        "Stop-Service -Name wuauserv -Force -ErrorAction SilentlyContinue",
        "Set-Service -Name wuauserv -StartupType Disabled",
        "try { Set-MpPreference -SubmitSamplesConsent 2 -MAPSReporting 0 } catch { }",
        "Report 'updates and sample submission off'",
        "Report 'done'",
        "Stop-Transcript | Out-Null",
        "Stop-Computer -Force",
    ]
    return "\r\n".join(lines) + "\r\n"
