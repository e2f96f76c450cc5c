"""The golden image's answer file and first-logon script: well-formed, per edition, injection-proof, and
doing what a fresh Windows really needs (docs/windows-facts.md, "Windows Setup, the answer file and the
first-logon script")."""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET

import pytest

from harness.image.answer import (
    EDITIONS,
    FIRST_LOGON,
    UNATTEND_NS,
    UPLOAD_DIR,
    ImageOptions,
    OpenSshInstaller,
    answer_files,
    autounattend_xml,
    expected_settings,
    first_logon_script,
)

NS = {"u": UNATTEND_NS}
MSI = OpenSshInstaller(kind="msi")
ZIP = OpenSshInstaller(kind="zip", folder="OpenSSH-Win64")

# Microsoft Learn, "Key Management Services (KMS) client activation and product keys" (the GVLKs), copied
# here independently of harness/image/answer.py so a typo in either shows.
KMS_CLIENT_KEYS = {
    "Windows 10 Pro": "W269N-WFGWX-YVC9B-4J6C9-T83GX",
    "Windows 10 Enterprise": "NPPR9-FWDCX-D2C8J-H872K-2YT43",
    "Windows 11 Pro": "W269N-WFGWX-YVC9B-4J6C9-T83GX",
    "Windows 11 Enterprise": "NPPR9-FWDCX-D2C8J-H872K-2YT43",
    "Windows Server 2019 SERVERSTANDARD": "N69G4-B89J2-4G8F4-WWYCC-J464C",
    "Windows Server 2019 SERVERDATACENTER": "WMDGN-G9PQG-XVVXX-R3X43-63DFG",
    "Windows Server 2022 SERVERSTANDARD": "VDYBN-27WPP-V4HQT-9VMD4-VMK7H",
    "Windows Server 2022 SERVERDATACENTER": "WX4NM-KYWYW-QJJR4-XV3QB-6VM33",
}
CMD_LIMIT = 8191  # cmd.exe's longest command line (Microsoft: "Command prompt (Cmd.exe) command-line string limitation")
FIRST_LOGON_COMMAND_LIMIT = 1024  # FirstLogonCommands/SynchronousCommand/CommandLine
DEPLOYMENT_PATH_LIMIT = 259  # Microsoft-Windows-Deployment/RunSynchronous/RunSynchronousCommand/Path


def parse(xml: str) -> ET.Element:
    return ET.fromstring(xml.encode())


def component(root: ET.Element, settings: str, name: str) -> ET.Element:
    for node in root.findall("u:settings", NS):
        if node.get("pass") == settings:
            for item in node.findall("u:component", NS):
                if item.get("name") == name:
                    return item
    raise AssertionError(f"{settings}/{name} missing")


def full_options(edition: str = "Windows 11 Pro", **changes: object) -> ImageOptions:
    values: dict[str, object] = {"edition": edition, "ssh": True, "openssh": MSI, "certificate": PEM}
    values.update(changes)
    return ImageOptions(**values)  # type: ignore[arg-type]


PEM = (
    b"-----BEGIN CERTIFICATE-----\n"
    + b"MIIBszCCAVmgAwIBAgIUQ2VydGlmaWNhdGUgZm9yIHRlc3RzMAoGCCqGSM49BAMC\n"
    + b"-----END CERTIFICATE-----\n"
)


@pytest.mark.parametrize("edition", EDITIONS)
def test_answer_file_per_edition(edition: str) -> None:
    root = parse(autounattend_xml(ImageOptions(edition=edition), "P@ss"))
    setup = component(root, "windowsPE", "Microsoft-Windows-Setup")
    assert setup.findtext("u:ImageInstall/u:OSImage/u:InstallFrom/u:MetaData/u:Value", namespaces=NS) == edition
    assert setup.findtext("u:ImageInstall/u:OSImage/u:InstallTo/u:PartitionID", namespaces=NS) == "3"
    kinds = [
        p.findtext("u:Type", namespaces=NS) for p in setup.iterfind("u:DiskConfiguration/u:Disk/u:CreatePartitions/u:CreatePartition", NS)
    ]
    assert kinds == ["EFI", "MSR", "Primary"]  # UEFI/GPT layout
    bypass = [c.findtext("u:Path", namespaces=NS) for c in setup.iterfind("u:RunSynchronous/u:RunSynchronousCommand", NS)]
    assert (len(bypass) == 3) == edition.startswith("Windows 11")
    assert all("LabConfig" in (command or "") for command in bypass)
    shell = component(root, "oobeSystem", "Microsoft-Windows-Shell-Setup")
    assert shell.findtext("u:UserAccounts/u:AdministratorPassword/u:Value", namespaces=NS) == "P@ss"
    assert shell.findtext("u:OOBE/u:SkipMachineOOBE", namespaces=NS) == "true"
    command = shell.findtext("u:FirstLogonCommands/u:SynchronousCommand/u:CommandLine", namespaces=NS) or ""
    assert FIRST_LOGON in command


@pytest.mark.parametrize("edition", EDITIONS)
def test_the_edition_gets_microsofts_generic_key_unless_it_is_evaluation_media(edition: str) -> None:
    # Retail and volume-licence media pick the edition by key; Evaluation media take none.
    setup = component(parse(autounattend_xml(ImageOptions(edition=edition), "x")), "windowsPE", "Microsoft-Windows-Setup")
    key = setup.findtext("u:UserData/u:ProductKey/u:Key", namespaces=NS)
    if "Evaluation" in edition:
        assert setup.find("u:UserData/u:ProductKey", NS) is None
    else:
        assert key == KMS_CLIENT_KEYS[edition]


def test_server_evaluation_media_take_no_key_and_a_key_of_ones_own_wins() -> None:
    # Server Evaluation ISOs name their images like the licensed ones: the user says so with evaluation=True.
    setup = component(parse(autounattend_xml(ImageOptions(edition="Windows Server 2022 SERVERSTANDARD", evaluation=True), "x")),
                      "windowsPE", "Microsoft-Windows-Setup")  # fmt: skip
    assert setup.find("u:UserData/u:ProductKey", NS) is None
    own = ImageOptions(edition="Windows 10 Pro", product_key="AAAAA-BBBBB-CCCCC-DDDDD-EEEEE")
    setup = component(parse(autounattend_xml(own, "x")), "windowsPE", "Microsoft-Windows-Setup")
    assert setup.findtext("u:UserData/u:ProductKey/u:Key", namespaces=NS) == "AAAAA-BBBBB-CCCCC-DDDDD-EEEEE"
    with pytest.raises(ValueError, match="Evaluation"):
        ImageOptions(edition="Windows 10 Pro", product_key="AAAAA-BBBBB-CCCCC-DDDDD-EEEEE", evaluation=True)


def test_locale() -> None:
    root = parse(autounattend_xml(ImageOptions(edition="Windows 10 Pro", locale="de-DE"), "x"))
    assert component(root, "windowsPE", "Microsoft-Windows-International-Core-WinPE").findtext("u:UserLocale", namespaces=NS) == "de-DE"


def test_a_password_with_markup_stays_a_value() -> None:
    password = "</Value><PlainText>false</PlainText>&\"'"
    root = parse(autounattend_xml(ImageOptions(edition="Windows 10 Pro"), password))
    shell = component(root, "oobeSystem", "Microsoft-Windows-Shell-Setup")
    assert shell.findtext("u:UserAccounts/u:AdministratorPassword/u:Value", namespaces=NS) == password
    assert shell.findtext("u:AutoLogon/u:Password/u:Value", namespaces=NS) == password


@pytest.mark.parametrize(
    ("field", "value"),
    [("edition", "Windows 95"), ("locale", "english"), ("computer_name", "a;b"), ("username", "x y"), ("product_key", "1234")],
)
def test_bad_options_are_rejected(field: str, value: str) -> None:
    options = {"edition": "Windows 10 Pro", field: value}
    with pytest.raises(ValueError):
        ImageOptions(**options)  # type: ignore[arg-type]


def test_ssh_without_an_offline_installer_is_refused_with_what_to_do() -> None:
    # Add-WindowsCapability downloads from Windows Update, and the build VM has no network.
    with pytest.raises(ValueError, match="--openssh") as caught:
        ImageOptions(edition="Windows 10 Pro", ssh=True)
    assert "\n" not in str(caught.value) and "Win32-OpenSSH" in str(caught.value)


def test_device_encryption_is_prevented_before_oobe() -> None:
    # Automatic device encryption starts at the end of OOBE (the build VM's TPM is not the test VM's): the
    # value must be there in the specialize pass, before OOBE runs.
    root = parse(autounattend_xml(ImageOptions(edition="Windows 11 Pro"), "x"))
    deployment = component(root, "specialize", "Microsoft-Windows-Deployment")
    paths = [c.findtext("u:Path", namespaces=NS) or "" for c in deployment.iterfind("u:RunSynchronous/u:RunSynchronousCommand", NS)]
    assert any("HKLM\\SYSTEM\\CurrentControlSet\\Control\\BitLocker" in p and "PreventDeviceEncryption" in p and "/d 1" in p for p in paths)


# -- the first-logon script -------------------------------------------------------------------------


def lines(script: str) -> list[str]:
    return script.split("\r\n")


def test_first_logon_script_turns_on_what_the_harness_needs() -> None:
    script = first_logon_script(full_options())
    for needed in (
        "Enable-PSRemoting -Force -SkipNetworkProfileCheck",
        "'bcdedit.exe' @('/set', '{current}', 'testsigning', 'on')",
        "'bcdedit.exe' @('/debug', '{current}', 'on')",
        "'bcdedit.exe' @('/dbgsettings', 'serial', 'debugport:1', 'baudrate:115200')",
        "Debug Print Filter",
        "Set-Service -Name wuauserv -StartupType Disabled",
        "Stop-Computer -Force",
    ):
        assert needed in script, needed
    assert "Add-WindowsCapability" not in script  # it needs Windows Update, which the build VM cannot reach
    assert "Set-NetConnectionProfile" not in script  # the build VM has no NIC: nothing to set; the rules cover every profile


@pytest.mark.parametrize(("ssh", "ports"), [(False, [5985]), (True, [5985, 22])])
def test_inbound_rules_for_every_network_profile(ssh: bool, ports: list[int]) -> None:
    # The test VM's NIC is an unidentified (Public) network; Enable-PSRemoting alone opens Public only for the local subnet.
    options = full_options(ssh=ssh, openssh=MSI if ssh else None)
    rules = [line for line in lines(first_logon_script(options)) if "New-NetFirewallRule" in line]
    assert len(rules) == len(ports)
    for rule, port in zip(rules, ports, strict=True):
        assert f"-LocalPort {port} " in rule and "-Protocol TCP" in rule and "-Direction Inbound" in rule and "-Action Allow" in rule
        assert "-Profile Any" in rule and "-RemoteAddress Any" in rule


@pytest.mark.parametrize(("installer", "expected"), [
    (MSI, "Start-Process -FilePath 'msiexec.exe'"),
    (ZIP, "Expand-Archive -LiteralPath (Join-Path $media 'OpenSSH-Win64.zip')"),
])  # fmt: skip
def test_openssh_comes_from_the_installer_on_the_answer_medium(installer: OpenSshInstaller, expected: str) -> None:
    script = first_logon_script(full_options(openssh=installer))
    assert expected in script
    if installer.kind == "zip":
        assert "install-sshd.ps1" in script and "Join-Path $staging 'OpenSSH-Win64'" in script
    assert "Set-Service -Name sshd -StartupType Automatic" in script


def test_the_upload_folder_exists_before_anything_is_uploaded() -> None:
    script = first_logon_script(ImageOptions(edition="Windows 10 Pro"))
    assert f"New-Item -ItemType Directory -Force -Path {ps(UPLOAD_DIR)}" in script
    assert f"Test-Path -LiteralPath {ps(UPLOAD_DIR)} -PathType Container" in script


def ps(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def test_progress_goes_to_every_serial_port_the_guest_has() -> None:
    # The build VM has one serial port, which Windows may not call COM2.
    script = first_logon_script(ImageOptions(edition="Windows 10 Pro"))
    assert "[System.IO.Ports.SerialPort]::GetPortNames()" in script
    assert "'COM1'" not in script and "'COM2'" not in script


@pytest.mark.parametrize("options", [
    ImageOptions(edition="Windows 10 Pro"),
    full_options("Windows 11 Pro"),
    full_options("Windows Server 2022 SERVERSTANDARD", openssh=ZIP),
], ids=["plain", "ssh-msi-cert", "server-zip"])  # fmt: skip
def test_every_setting_the_manifest_can_claim_is_verified_in_the_script(options: ImageOptions) -> None:
    script = first_logon_script(options)
    for setting in expected_settings(options):
        assert f"Test-Setting '{setting}' {{" in script, setting
    checked = re.findall(r"^Test-Setting '([a-z0-9-]+)' \{", script, flags=re.M)
    assert sorted(checked) == sorted(expected_settings(options))  # nothing reported that the manifest would not know
    # Each check reports "ok NAME" or "FAILED NAME: detail" through Report, on every port.
    assert "Report ('ok ' + $setting)" in script and "Report ('FAILED ' + $setting + ': '" in script


def test_the_checks_read_back_what_was_set() -> None:
    script = first_logon_script(full_options())
    for readback in (
        "& bcdedit.exe /enum '{current}'",
        "(?m)^testsigning\\s+Yes\\s*$",
        "(?m)^debug\\s+Yes\\s*$",
        "& bcdedit.exe /dbgsettings",
        "(?m)^debugtype\\s+Serial\\s*$",
        "(?m)^debugport\\s+1\\s*$",
        "(?m)^baudrate\\s+115200\\s*$",
        "Test-WSMan -ComputerName localhost -Port 5985",
        "Get-NetTCPConnection -LocalPort 22 -State Listen",
        "GetValue('PreventDeviceEncryption')",
        "GetValue('DEFAULT')",
        "GetValue('CrashDumpEnabled')",
        "GetValue('NMICrashDump')",
        "$LASTEXITCODE",
    ):
        assert readback in script, readback


def test_the_certificate_travels_as_a_file_and_is_checked_in_both_stores_by_thumbprint() -> None:
    options = full_options(certificate=PEM)
    files = answer_files(options, "pw")
    der = files["kcb-test-ca.cer"]
    assert der.startswith(b"\x30")  # DER, whatever the user gave
    thumbprint = hashlib.sha1(der).hexdigest().upper()
    script = first_logon_script(options)
    for store in ("Root", "TrustedPublisher"):
        assert f"'Cert:\\LocalMachine\\{store}\\{thumbprint}'" in script
    assert "FromBase64String" not in script  # no certificate-sized line


def test_answer_files_hold_what_the_answer_medium_carries() -> None:
    files = answer_files(ImageOptions(edition="Windows 10 Pro"), "pw")
    assert sorted(files) == ["autounattend.xml", FIRST_LOGON]
    assert b"<Value>pw</Value>" in files["autounattend.xml"]


def test_no_ssh_no_certificate() -> None:
    script = first_logon_script(ImageOptions(edition="Windows Server 2022 SERVERSTANDARD"))
    assert "sshd" not in script and "certutil" not in script and "LocalPort 22" not in script


@pytest.mark.parametrize("edition", EDITIONS)
def test_no_command_is_longer_than_windows_accepts(edition: str) -> None:
    options = full_options(edition)
    root = parse(autounattend_xml(options, "x" * 127))
    for command in root.iter(f"{{{UNATTEND_NS}}}CommandLine"):
        assert len(command.text or "") <= FIRST_LOGON_COMMAND_LIMIT
    deployment = component(root, "specialize", "Microsoft-Windows-Deployment")
    for path in deployment.iter(f"{{{UNATTEND_NS}}}Path"):
        assert len(path.text or "") <= DEPLOYMENT_PATH_LIMIT
    # Every line of the script, and so every command it runs, within cmd.exe's limit (the smallest documented one,
    # which keeps any command safe however it is started).
    for line in lines(first_logon_script(options)):
        assert len(line) <= CMD_LIMIT, line[:80]
