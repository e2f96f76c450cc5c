"""The Windows answer file (autounattend.xml) and first-logon script of the golden image. Pure.

Both are built from data: the XML with ElementTree (so a password or name
cannot break out of its element), the PowerShell with single-quoted literals
(harness.transports.commands.ps_literal). The answer file installs the
chosen edition (with Microsoft's generic KMS client key unless the media are
Evaluation media or the user gave a key), keeps device encryption from
starting, and runs the first-logon script once. The script applies what
the harness needs (the upload folder; WinRM, and OpenSSH from the user's
offline installer, each with an inbound rule on every network profile;
test-signing; serial kernel debugging; the DbgPrint filter; small memory
dumps with automatic restart; the test certificate), quietens Windows Update
and Defender's sample submission, then **checks** each setting by reading it
back and reports ``ok NAME`` or ``FAILED NAME: detail`` on every serial port
the guest has, and shuts the machine down. The manifest records only the
settings whose ``ok`` arrived (harness.image.build). Every fact behind this is
in docs/windows-facts.md, "Windows Setup, the answer file and the first-logon
script".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Literal

from harness.transports.commands import ps_literal

UNATTEND_NS = "urn:schemas-microsoft-com:unattend"
WCM_NS = "http://schemas.microsoft.com/WMIConfig/2002/State"
FIRST_LOGON = "kcb-firstlogon.ps1"
CERTIFICATE_FILE = "kcb-test-ca.cer"
PROGRESS_PREFIX = "kcb-image:"
UPLOAD_DIR = "C:\\kcb"  # the default guest_dir of harness.yaml
WINRM_PORT = 5985
SSH_PORT = 22
OPENSSH_DIR = "C:\\Program Files\\OpenSSH"  # where the Win32-OpenSSH MSI installs, and where the zip is put
FILTER = "HKLM:\\SYSTEM\\CurrentControlSet\\Control\\Session Manager\\Debug Print Filter"
CRASH = "HKLM:\\SYSTEM\\CurrentControlSet\\Control\\CrashControl"
BITLOCKER = "HKLM:\\SYSTEM\\CurrentControlSet\\Control\\BitLocker"
PREVENT_DEVICE_ENCRYPTION = "reg add HKLM\\SYSTEM\\CurrentControlSet\\Control\\BitLocker /v PreventDeviceEncryption /t REG_DWORD /d 1 /f"

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

#: Microsoft's generic volume licence keys (KMS client setup keys), which select the edition on retail and
#: volume-licence media and activate nothing by themselves. Evaluation editions take no key.
GENERIC_KEYS = {
    "Windows 10 Pro": "W269N-WFGWX-YVC9B-4J6C9-T83GX",
    "Windows 10 Enterprise": "NPPR9-FWDCX-D2C8J-H872K-2YT43",
    "Windows 11 Pro": "W269N-WFGWX-YVC9B-4J6C9-T83GX",
    "Windows 11 Enterprise": "NPPR9-FWDCX-D2C8J-H872K-2YT43",
    "Windows Server 2019 SERVERSTANDARD": "N69G4-B89J2-4G8F4-WWYCC-J464C",
    "Windows Server 2019 SERVERDATACENTER": "WMDGN-G9PQG-XVVXX-R3X43-63DFG",
    "Windows Server 2022 SERVERSTANDARD": "VDYBN-27WPP-V4HQT-9VMD4-VMK7H",
    "Windows Server 2022 SERVERDATACENTER": "WX4NM-KYWYW-QJJR4-XV3QB-6VM33",
}

#: Every setting the first-logon script can verify (and so the manifest can claim), with what its check reads back.
SETTINGS = {
    "upload-folder": f"{UPLOAD_DIR} is a folder (SFTP does not create the folder it writes into)",
    "device-encryption-off": "PreventDeviceEncryption=1 under HKLM\\SYSTEM\\CurrentControlSet\\Control\\BitLocker; C: fully decrypted",
    "winrm": f"WinRM service automatic and running, an HTTP listener on every address, Test-WSMan on {WINRM_PORT}",
    "winrm-firewall": f"an enabled inbound allow rule for TCP {WINRM_PORT}, every profile, any remote address",
    "openssh": f"sshd service automatic and running, listening on TCP {SSH_PORT}, sftp-server.exe present",
    "ssh-firewall": f"an enabled inbound allow rule for TCP {SSH_PORT}, every profile, any remote address",
    "testsigning": "bcdedit /enum {current} shows testsigning Yes",
    "kernel-debug-serial": "bcdedit /enum {current} shows debug Yes; /dbgsettings shows debugtype Serial, debugport 1, baudrate 115200",
    "debug-print-filter": "Debug Print Filter\\DEFAULT is the DWORD 0xF",
    "crash-dump": "CrashControl: CrashDumpEnabled 3 (small dump), AutoReboot 1, MinidumpDir %SystemRoot%\\Minidump, NMICrashDump 1",
    "test-certificate": "the test CA's thumbprint in LocalMachine\\Root and LocalMachine\\TrustedPublisher",
    "updates-off": "the wuauserv service is disabled",
    "sample-submission-off": "Get-MpPreference: SubmitSamplesConsent 2, MAPSReporting 0",
}


@dataclass(frozen=True)
class OpenSshInstaller:
    """The Win32-OpenSSH release the user provides (Windows cannot download OpenSSH in the build VM, which has no network).

    ``kind``: the MSI, or the zip with install-sshd.ps1; ``folder``: the folder in the zip that holds it ("" = the root).
    """

    kind: Literal["msi", "zip"]
    folder: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("msi", "zip"):
            raise ValueError(f"OpenSSH installer: {self.kind!r} is neither an MSI nor a zip")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{0,64}", self.folder) or self.folder in (".", ".."):
            raise ValueError(f"OpenSSH installer: unexpected folder {self.folder!r} in the zip")

    @property
    def file_name(self) -> str:
        """Its name on the answer medium."""
        return f"OpenSSH-Win64.{self.kind}"


@dataclass(frozen=True)
class ImageOptions:
    """What the user chose for the image."""

    edition: str
    locale: str = "en-US"
    timezone: str = "UTC"
    computer_name: str = "KCB-TEST"
    username: str = "Administrator"
    product_key: str | None = None  # None: Microsoft's generic key for the edition (none for Evaluation media)
    evaluation: bool = False  # Evaluation media whose image names do not say so (Windows Server Evaluation ISOs)
    ssh: bool = False
    openssh: OpenSshInstaller | None = None
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
        if self.product_key is not None and self.evaluation_media:
            raise ValueError("a product key and Evaluation media do not go together: Evaluation editions install without a key")
        if self.ssh and self.openssh is None:
            raise ValueError(
                "--ssh needs --openssh PATH: the OpenSSH-Win64 .msi or .zip from the PowerShell/Win32-OpenSSH releases "
                "(the build VM has no network, so Windows cannot download OpenSSH itself)"
            )
        if self.certificate is not None:
            certificate_der(self.certificate)

    @property
    def windows11(self) -> bool:
        return self.edition.startswith("Windows 11")

    @property
    def server(self) -> bool:
        return self.edition.startswith("Windows Server")

    @property
    def evaluation_media(self) -> bool:
        return self.evaluation or self.edition.endswith(" Evaluation")

    @property
    def edition_key(self) -> str | None:
        """The key Setup gets in UserData/ProductKey (None: no key, Evaluation media)."""
        if self.product_key is not None:
            return self.product_key
        return None if self.evaluation_media else GENERIC_KEYS[self.edition]


def certificate_der(data: bytes) -> bytes:
    """The DER of a certificate given as DER or PEM.

    Raises:
        ValueError: neither.
    """
    if b"-----BEGIN CERTIFICATE-----" in data:
        body = data.split(b"-----BEGIN CERTIFICATE-----", 1)[1].split(b"-----END CERTIFICATE-----", 1)[0]
        try:
            data = base64.b64decode(b"".join(body.split()), validate=True)
        except binascii.Error:
            raise ValueError("certificate: the PEM block is not base64") from None
    if data[:1] != b"\x30":
        raise ValueError("certificate: expected DER or PEM")
    return data


def expected_settings(options: ImageOptions) -> tuple[str, ...]:
    """The settings the first-logon script applies and checks for ``options``, in its order."""
    settings = ["upload-folder", "device-encryption-off", "winrm", "winrm-firewall"]
    settings += ["openssh", "ssh-firewall"] if options.ssh else []
    settings += ["testsigning", "kernel-debug-serial", "debug-print-filter", "crash-dump"]
    settings += ["test-certificate"] if options.certificate is not None else []
    settings += ["updates-off", "sample-submission-off"]
    return tuple(settings)


# -- autounattend.xml --------------------------------------------------------------------------------


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
    """The answer file: UEFI/GPT disk layout, the edition and its key, no OOBE, no device encryption, Administrator
    autologon once, the first-logon script."""
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
    key = options.edition_key
    if key is not None:
        product_key = _el(user_data, "ProductKey")
        _el(product_key, "Key", key)
        _el(product_key, "WillShowUI", "OnError")  # a refused key stops on its page (the build's screenshot shows it)

    specialize = _el(root, "settings", **{"pass": "specialize"})
    _el(_component(specialize, "Microsoft-Windows-Shell-Setup"), "ComputerName", options.computer_name)
    # Device encryption starts once OOBE ends, with the build VM's TPM, which the test VM does not have: the value
    # must be in place before OOBE.
    deployment = _el(_el(_component(specialize, "Microsoft-Windows-Deployment"), "RunSynchronous"), "RunSynchronousCommand",
                     wcm_action="add")  # fmt: skip
    _el(deployment, "Order", "1")
    _el(deployment, "Path", PREVENT_DEVICE_ENCRYPTION)

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


# -- the first-logon script -------------------------------------------------------------------------

# Helpers every section uses. Report writes a progress line to every serial port Windows has (the build VM has one,
# which Windows may not call COM2). Invoke-Step and Invoke-Native record what failed while applying a setting (an
# exception, a non-zero exit code); Test-Setting adds what its check finds and reports ok or FAILED with the details.
_PROLOGUE = f"""\
$ErrorActionPreference = 'Continue'
Start-Transcript -Path 'C:\\kcb-firstlogon.log' -Force | Out-Null
$media = $PSScriptRoot
function Report([string]$text) {{
  $line = {ps_literal(PROGRESS_PREFIX + " ")} + $text
  Write-Host $line
  foreach ($name in [System.IO.Ports.SerialPort]::GetPortNames()) {{
    try {{
      $port = New-Object System.IO.Ports.SerialPort $name, 115200
      $port.WriteTimeout = 2000
      $port.Open()
      $port.WriteLine($line)
      $port.Close()
    }} catch {{ }}
  }}
}}
$script:failures = @{{}}
function Add-Failure([string]$setting, [string]$problem) {{
  $script:failures[$setting] = @($script:failures[$setting]) + @($problem)
}}
function Invoke-Step([string]$setting, [scriptblock]$step) {{
  try {{ & $step }} catch {{ Add-Failure $setting $_.Exception.Message }}
}}
function Invoke-Native([string]$setting, [string]$program, [string[]]$arguments) {{
  $output = & $program @arguments 2>&1 | Out-String
  if ($LASTEXITCODE -ne 0) {{
    Add-Failure $setting ($program + ' ' + ($arguments -join ' ') + ' exited ' + $LASTEXITCODE + ': ' + $output)
  }}
}}
function Test-Setting([string]$setting, [scriptblock]$check) {{
  $problems = @($script:failures[$setting] | Where-Object {{ $_ }})
  try {{ $problems += @(& $check | Where-Object {{ $_ }}) }} catch {{ $problems += $_.Exception.Message }}
  if ($problems.Count -eq 0) {{
    Report ('ok ' + $setting)
  }} else {{
    $detail = (($problems -join '; ') -replace '\\s+', ' ').Trim()
    if ($detail.Length -gt 300) {{ $detail = $detail.Substring(0, 300) + '...' }}
    Report ('FAILED ' + $setting + ': ' + $detail)
  }}
}}
function Test-InboundRule([string]$name, [int]$port) {{
  $rule = Get-NetFirewallRule -Name $name -ErrorAction SilentlyContinue
  if ($null -eq $rule) {{ return ('no firewall rule ' + $name) }}
  if ([string]$rule.Enabled -ne 'True') {{ 'rule ' + $name + ' is disabled' }}
  if ([string]$rule.Direction -ne 'Inbound' -or [string]$rule.Action -ne 'Allow') {{ 'rule ' + $name + ' is not an inbound allow rule' }}
  if ([string]$rule.Profile -ne 'Any') {{ 'rule ' + $name + ' covers only the profiles ' + $rule.Profile }}
  $ports = $rule | Get-NetFirewallPortFilter
  if ([string]$ports.Protocol -ne 'TCP' -or [string]$ports.LocalPort -ne [string]$port) {{
    'rule ' + $name + ' is for ' + $ports.Protocol + ' ' + $ports.LocalPort
  }}
  $addresses = $rule | Get-NetFirewallAddressFilter
  if ([string]$addresses.RemoteAddress -ne 'Any') {{ 'rule ' + $name + ' admits only ' + $addresses.RemoteAddress }}
}}
Report ('build ' + [Environment]::OSVersion.Version.Build)"""


def _firewall(setting: str, name: str, port: int, what: str) -> list[str]:
    rule, display = ps_literal(name), ps_literal(f"kcb-harness {what} (TCP {port})")
    return [
        f"Invoke-Step '{setting}' {{ Remove-NetFirewallRule -Name {rule} -ErrorAction SilentlyContinue }}",
        f"Invoke-Step '{setting}' {{ New-NetFirewallRule -Name {rule} -DisplayName {display} -Direction Inbound -Protocol TCP "
        f"-LocalPort {port} -RemoteAddress Any -Profile Any -Action Allow -Enabled True | Out-Null }}",
        f"Test-Setting '{setting}' {{ Test-InboundRule {rule} {port} }}",
    ]


def _openssh(installer: OpenSshInstaller) -> list[str]:
    medium = f"(Join-Path $media {ps_literal(installer.file_name)})"
    target = ps_literal(OPENSSH_DIR)
    install_script, sftp_server = ps_literal(OPENSSH_DIR + "\\install-sshd.ps1"), ps_literal(OPENSSH_DIR + "\\sftp-server.exe")
    if installer.kind == "msi":
        log = "C:\\kcb-openssh-msi.log"
        lines = [
            "Invoke-Step 'openssh' {",
            f"  $msi = Start-Process -FilePath 'msiexec.exe' -ArgumentList @('/i', ('\"' + {medium} + '\"'), '/qn', '/norestart', "
            f"'/l*v', '\"{log}\"') -Wait -PassThru",
            f"  if ($msi.ExitCode -ne 0 -and $msi.ExitCode -ne 3010) {{ throw ('msiexec exited ' + $msi.ExitCode + ', see {log}') }}",
            "}",
        ]
    else:
        source = f"(Join-Path $staging {ps_literal(installer.folder)})" if installer.folder else "$staging"
        lines = [
            "Invoke-Step 'openssh' {",
            "  $staging = 'C:\\Windows\\Temp\\kcb-openssh'",
            f"  Expand-Archive -LiteralPath {medium} -DestinationPath $staging -Force",
            f"  Move-Item -LiteralPath {source} -Destination {target} -Force",
            "}",
            f"Invoke-Native 'openssh' 'powershell.exe' @('-NoProfile', '-ExecutionPolicy', 'Bypass', '-File', {install_script})",
        ]
    return lines + [
        # sftp-server and scp are found through the machine PATH (the Win32-OpenSSH MSI instructions add the folder).
        "Invoke-Step 'openssh' {",
        "  $path = [Environment]::GetEnvironmentVariable('Path', 'Machine')",
        f"  if (($path -split ';') -notcontains {target}) {{",
        f"    [Environment]::SetEnvironmentVariable('Path', $path + ';' + {target}, 'Machine')",
        "  }",
        "}",
        "Invoke-Step 'openssh' { Set-Service -Name sshd -StartupType Automatic; Start-Service -Name sshd }",
        "Test-Setting 'openssh' {",
        "  $service = Get-Service -Name sshd -ErrorAction SilentlyContinue",
        "  if ($null -eq $service) { return 'no sshd service' }",
        "  if ($service.Status -ne 'Running') { 'sshd is ' + $service.Status }",
        "  if ($service.StartType -ne 'Automatic') { 'sshd starts ' + $service.StartType }",
        f"  if (-not (Get-NetTCPConnection -LocalPort {SSH_PORT} -State Listen -ErrorAction SilentlyContinue)) {{",
        f"    'nothing listens on TCP {SSH_PORT}'",
        "  }",
        f"  if (-not (Test-Path -LiteralPath {sftp_server})) {{ 'no sftp-server.exe in {OPENSSH_DIR}' }}",
        "}",
    ]


def first_logon_script(options: ImageOptions) -> str:
    """The PowerShell the answer file runs once at the first logon: apply, check, report, shut down."""
    upload, bitlocker, filter_key, crash = (ps_literal(path) for path in (UPLOAD_DIR, BITLOCKER, FILTER, CRASH))
    lines = _PROLOGUE.split("\n") + [
        f"Invoke-Step 'upload-folder' {{ New-Item -ItemType Directory -Force -Path {upload} | Out-Null }}",
        "Test-Setting 'upload-folder' {",
        f"  if (-not (Test-Path -LiteralPath {upload} -PathType Container)) {{ {ps_literal(UPLOAD_DIR + ' is not a folder')} }}",
        "}",
        # The answer file set it before OOBE (specialize); here it is made sure of, and a volume that still got
        # encrypted is decrypted (the build VM's TPM is not the test VM's).
        "Invoke-Step 'device-encryption-off' {",
        f"  if (-not (Test-Path -LiteralPath {bitlocker})) {{ New-Item -Path {bitlocker} | Out-Null }}",
        f"  Set-ItemProperty -Path {bitlocker} -Name 'PreventDeviceEncryption' -Type DWord -Value 1",
        "  if (Get-Command -Name Get-BitLockerVolume -ErrorAction SilentlyContinue) {",
        "    if ((Get-BitLockerVolume -MountPoint 'C:').VolumeStatus -ne 'FullyDecrypted') {",
        "      Disable-BitLocker -MountPoint 'C:' | Out-Null",
        "      $deadline = (Get-Date).AddMinutes(60)",
        "      while ((Get-BitLockerVolume -MountPoint 'C:').VolumeStatus -ne 'FullyDecrypted' -and (Get-Date) -lt $deadline) {",
        "        Start-Sleep -Seconds 10",
        "      }",
        "    }",
        "  }",
        "}",
        "Test-Setting 'device-encryption-off' {",
        f"  $value = (Get-Item -LiteralPath {bitlocker}).GetValue('PreventDeviceEncryption')",
        "  if ($value -ne 1) { 'PreventDeviceEncryption is ' + $value }",
        "  if (Get-Command -Name Get-BitLockerVolume -ErrorAction SilentlyContinue) {",
        "    $status = (Get-BitLockerVolume -MountPoint 'C:').VolumeStatus",
        "    if ($status -ne 'FullyDecrypted') { 'C: is ' + $status }",
        "  }",
        "}",
        # WinRM on whatever network profile the test VM's NIC gets (an unidentified network is Public).
        "Invoke-Step 'winrm' { Enable-PSRemoting -Force -SkipNetworkProfileCheck | Out-Null }",
        "Invoke-Step 'winrm' { Set-Service -Name WinRM -StartupType Automatic }",
        "Test-Setting 'winrm' {",
        "  $service = Get-Service -Name WinRM",
        "  if ($service.Status -ne 'Running') { 'the WinRM service is ' + $service.Status }",
        "  if ($service.StartType -ne 'Automatic') { 'the WinRM service starts ' + $service.StartType }",
        "  $listeners = @(Get-ChildItem -Path 'WSMan:\\localhost\\Listener' | Where-Object { $_.Keys -contains 'Transport=HTTP' -and "
        "$_.Keys -contains 'Address=*' })",
        "  if ($listeners.Count -eq 0) { 'no WinRM HTTP listener on every address' }",
        f"  Test-WSMan -ComputerName localhost -Port {WINRM_PORT} -ErrorAction Stop | Out-Null",
        f"  if (-not (Get-NetTCPConnection -LocalPort {WINRM_PORT} -State Listen -ErrorAction SilentlyContinue)) {{",
        f"    'nothing listens on TCP {WINRM_PORT}'",
        "  }",
        "}",
        *_firewall("winrm-firewall", "kcb-winrm-in", WINRM_PORT, "WinRM"),
    ]
    if options.ssh:
        assert options.openssh is not None  # ImageOptions refuses ssh without it
        lines += _openssh(options.openssh) + _firewall("ssh-firewall", "kcb-ssh-in", SSH_PORT, "OpenSSH")
    enum_current = "  $boot = & bcdedit.exe /enum '{current}' | Out-String"
    enum_failed = "  if ($LASTEXITCODE -ne 0) { return ('bcdedit /enum {current} exited ' + $LASTEXITCODE) }"
    lines += [
        "Invoke-Native 'testsigning' 'bcdedit.exe' @('/set', '{current}', 'testsigning', 'on')",
        "Invoke-Native 'kernel-debug-serial' 'bcdedit.exe' @('/dbgsettings', 'serial', 'debugport:1', 'baudrate:115200')",
        "Invoke-Native 'kernel-debug-serial' 'bcdedit.exe' @('/debug', '{current}', 'on')",
        "Test-Setting 'testsigning' {",
        enum_current,
        enum_failed,
        "  if ($boot -notmatch '(?m)^testsigning\\s+Yes\\s*$') { 'bcdedit /enum {current} does not show testsigning Yes' }",
        "}",
        "Test-Setting 'kernel-debug-serial' {",
        enum_current,
        enum_failed,
        "  if ($boot -notmatch '(?m)^debug\\s+Yes\\s*$') { 'bcdedit /enum {current} does not show debug Yes' }",
        "  $debugger = & bcdedit.exe /dbgsettings | Out-String",
        "  if ($LASTEXITCODE -ne 0) { return ('bcdedit /dbgsettings exited ' + $LASTEXITCODE) }",
        "  foreach ($expected in '(?m)^debugtype\\s+Serial\\s*$', '(?m)^debugport\\s+1\\s*$', '(?m)^baudrate\\s+115200\\s*$') {",
        "    if ($debugger -notmatch $expected) { 'bcdedit /dbgsettings does not match ' + $expected }",
        "  }",
        "}",
        "Invoke-Step 'debug-print-filter' {",
        f"  if (-not (Test-Path -LiteralPath {filter_key})) {{ New-Item -Path {filter_key} | Out-Null }}",
        f"  Set-ItemProperty -Path {filter_key} -Name 'DEFAULT' -Type DWord -Value 0xF",
        "}",
        "Test-Setting 'debug-print-filter' {",
        f"  $key = Get-Item -LiteralPath {filter_key}",
        "  if ($key.GetValue('DEFAULT') -ne 15 -or [string]$key.GetValueKind('DEFAULT') -ne 'DWord') {",
        "    'DEFAULT is ' + $key.GetValue('DEFAULT')",
        "  }",
        "}",
        # A small memory dump (3) into %SystemRoot%\Minidump, then a restart (AutoReboot 1): the harness pulls the dump
        # once the guest answers again (harness.guests.libvirt_vm.dumps).
        "Invoke-Step 'crash-dump' {",
        f"  Set-ItemProperty -Path {crash} -Name 'CrashDumpEnabled' -Type DWord -Value 3",
        f"  Set-ItemProperty -Path {crash} -Name 'AutoReboot' -Type DWord -Value 1",
        f"  Set-ItemProperty -Path {crash} -Name 'MinidumpDir' -Type ExpandString -Value '%SystemRoot%\\Minidump'",
        # An NMI bugchecks (0x80) and writes the dump: how the harness gets a dump of a hang (vm.hang_dump: nmi).
        f"  Set-ItemProperty -Path {crash} -Name 'NMICrashDump' -Type DWord -Value 1",
        "}",
        "Test-Setting 'crash-dump' {",
        f"  $key = Get-Item -LiteralPath {crash}",
        "  if ($key.GetValue('CrashDumpEnabled') -ne 3) { 'CrashDumpEnabled is ' + $key.GetValue('CrashDumpEnabled') }",
        "  if ($key.GetValue('AutoReboot') -ne 1) { 'AutoReboot is ' + $key.GetValue('AutoReboot') }",
        "  $folder = $key.GetValue('MinidumpDir', $null, 'DoNotExpandEnvironmentNames')",
        "  if ($folder -ne '%SystemRoot%\\Minidump') { 'MinidumpDir is ' + $folder }",
        "  if ($key.GetValue('NMICrashDump') -ne 1) { 'NMICrashDump is ' + $key.GetValue('NMICrashDump') }",
        "}",
    ]
    if options.certificate is not None:
        thumbprint = hashlib.sha1(certificate_der(options.certificate)).hexdigest().upper()
        certificate = f"(Join-Path $media {ps_literal(CERTIFICATE_FILE)})"
        lines += [
            f"Invoke-Native 'test-certificate' 'certutil.exe' @('-addstore', '-f', 'Root', {certificate})",
            f"Invoke-Native 'test-certificate' 'certutil.exe' @('-addstore', '-f', 'TrustedPublisher', {certificate})",
            "Test-Setting 'test-certificate' {",
            *(
                f"  if (-not (Test-Path -LiteralPath {ps_literal(path)})) {{ {ps_literal('not in ' + store)} }}"
                for store, path in ((store, f"Cert:\\LocalMachine\\{store}\\{thumbprint}") for store in ("Root", "TrustedPublisher"))
            ),
            "}",
        ]
    lines += [
        "Invoke-Step 'updates-off' { Stop-Service -Name wuauserv -Force -ErrorAction SilentlyContinue }",
        "Invoke-Step 'updates-off' { Set-Service -Name wuauserv -StartupType Disabled }",
        "Test-Setting 'updates-off' {",
        "  $service = Get-Service -Name wuauserv",
        "  if ($service.StartType -ne 'Disabled') { 'wuauserv starts ' + $service.StartType }",
        "}",
        "Invoke-Step 'sample-submission-off' { Set-MpPreference -SubmitSamplesConsent 2 -MAPSReporting 0 }",
        "Test-Setting 'sample-submission-off' {",
        "  $preference = Get-MpPreference",
        "  if ($preference.SubmitSamplesConsent -ne 2) { 'SubmitSamplesConsent is ' + $preference.SubmitSamplesConsent }",
        "  if ($preference.MAPSReporting -ne 0) { 'MAPSReporting is ' + $preference.MAPSReporting }",
        "}",
        "Report 'done'",
        "Stop-Transcript | Out-Null",
        "Stop-Computer -Force",
    ]
    return "\r\n".join(lines) + "\r\n"


def answer_files(options: ImageOptions, password: str) -> dict[str, bytes]:
    """What the answer medium holds (file name -> content), but the OpenSSH installer, which the caller copies."""
    files = {
        "autounattend.xml": autounattend_xml(options, password).encode("utf-8"),
        # With a byte-order mark: Windows PowerShell 5.1 reads a .ps1 without one in the ANSI code page.
        FIRST_LOGON: first_logon_script(options).encode("utf-8-sig"),
    }
    if options.certificate is not None:
        files[CERTIFICATE_FILE] = certificate_der(options.certificate)
    return files
