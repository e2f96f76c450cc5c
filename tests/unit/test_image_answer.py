"""The golden image's answer file and first-logon script: well-formed, per edition, injection-proof."""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET

import pytest

from harness.image.answer import EDITIONS, FIRST_LOGON, UNATTEND_NS, ImageOptions, autounattend_xml, first_logon_script

NS = {"u": UNATTEND_NS}


def parse(xml: str) -> ET.Element:
    return ET.fromstring(xml.encode())


def component(root: ET.Element, settings: str, name: str) -> ET.Element:
    for node in root.findall("u:settings", NS):
        if node.get("pass") == settings:
            for item in node.findall("u:component", NS):
                if item.get("name") == name:
                    return item
    raise AssertionError(f"{settings}/{name} missing")


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


def test_locale_and_product_key() -> None:
    root = parse(autounattend_xml(ImageOptions(edition="Windows 10 Pro", locale="de-DE", product_key="AAAAA-BBBBB-CCCCC-DDDDD-EEEEE"), "x"))
    international = component(root, "windowsPE", "Microsoft-Windows-International-Core-WinPE")
    assert international.findtext("u:UserLocale", namespaces=NS) == "de-DE"
    assert (
        component(root, "windowsPE", "Microsoft-Windows-Setup").findtext("u:UserData/u:ProductKey/u:Key", namespaces=NS)
        == "AAAAA-BBBBB-CCCCC-DDDDD-EEEEE"
    )


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


def test_first_logon_script_turns_on_what_the_harness_needs() -> None:
    script = first_logon_script(ImageOptions(edition="Windows 11 Pro", ssh=True, certificate=b"\x30\x82'; Remove-Item C:\\ -Recurse; '"))
    for needed in (
        "winrm quickconfig",
        "bcdedit /set testsigning on",
        "bcdedit /debug on",
        "bcdedit /dbgsettings serial debugport:1 baudrate:115200",
        "Debug Print Filter",
        "-Name 'DEFAULT' -Type DWord -Value 0xF",
        "-Name 'AutoReboot' -Type DWord -Value 1",
        "OpenSSH.Server",
        "certutil -addstore -f Root",
        "Set-Service -Name wuauserv -StartupType Disabled",
        "Stop-Computer -Force",
    ):
        assert needed in script, needed
    # The certificate travels as base64: its bytes cannot end a literal.
    encoded = re.search(r"FromBase64String\('([A-Za-z0-9+/=]+)'\)", script)
    assert encoded is not None and base64.b64decode(encoded.group(1)).endswith(b"-Recurse; '")
    assert "Remove-Item C:" not in script


def test_no_ssh_no_certificate() -> None:
    script = first_logon_script(ImageOptions(edition="Windows Server 2022 SERVERSTANDARD"))
    assert "OpenSSH" not in script and "certutil" not in script
