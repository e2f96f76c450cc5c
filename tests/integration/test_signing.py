"""Test-signing the built drivers with openssl + osslsigncode, for real."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.config import Settings
from harness.driver.sign import SigningError, ensure_certificate, sign, verify
from harness.guests import GuestFactory
from harness.runner import run_scenario
from harness.scenario.loader import load_scenario
from tests.integration.conftest import ROOT


def test_signed_drivers_verify_and_still_load(tmp_path: Path, settings: Settings, wine_factory: GuestFactory) -> None:
    drivers = tmp_path / "drivers"
    shutil.copytree(settings.drivers_dir, drivers)
    bundle = ensure_certificate(tmp_path / "cert")
    for image in drivers.glob("*.sys"):
        sign(image, bundle)
        assert "Signature verification: ok" in verify(image, tmp_path / "cert" / "ca.crt")
    # A signed image is still a PE the kernel's loader takes (here: the embedded guest).
    result = run_scenario(load_scenario(ROOT / "scenarios" / "02-receiver-before-sender.yaml"), wine_factory, drivers, tmp_path / "out")
    assert result.outcome == "passed", result.message


def test_a_tampered_image_fails_verification(tmp_path: Path, settings: Settings) -> None:
    image = tmp_path / "receiver.sys"
    shutil.copy(settings.drivers_dir / "receiver.sys", image)
    sign(image, ensure_certificate(tmp_path / "cert"))
    data = bytearray(image.read_bytes())
    data[0x400] ^= 0xFF  # inside .text
    image.write_bytes(bytes(data))
    with pytest.raises(SigningError, match="does not verify"):
        verify(image, tmp_path / "cert" / "ca.crt")


# SPC_PE_IMAGE_PAGE_HASHES_V1 / _V2 (1.3.6.1.4.1.311.2.3.1 / .2), DER-encoded with their tag and length.
PAGE_HASH_OIDS = (bytes.fromhex("060a2b060104018237020301"), bytes.fromhex("060a2b060104018237020302"))


def pem_body(text: str) -> bytes:
    """The DER inside one PEM block."""
    lines = text.strip().splitlines()
    assert lines[0].startswith("-----BEGIN ") and lines[-1].startswith("-----END "), text[:200]
    return base64.b64decode("".join(lines[1:-1]))


def test_signatures_carry_no_page_hashes(tmp_path: Path, settings: Settings) -> None:
    # osslsigncode's page hashes are known to be wrong (mtrojnar/osslsigncode#8) and Windows then refuses the
    # driver (error 577, #86, #111): sign without them. Checked in osslsigncode's report and in the signature itself.
    image = tmp_path / "receiver.sys"
    shutil.copy(settings.drivers_dir / "receiver.sys", image)
    sign(image, ensure_certificate(tmp_path / "cert"))
    report = verify(image, tmp_path / "cert" / "ca.crt")
    assert "Signature verification: ok" in report and "Page hash" not in report
    # PEM: without -pem, osslsigncode 2.5 (Debian 12) writes the WIN_CERTIFICATE with its 8-byte header, 2.9 the bare DER.
    signature = tmp_path / "receiver.pem"
    extract = ["osslsigncode", "extract-signature", "-pem", "-in", str(image), "-out", str(signature)]
    subprocess.run(extract, check=True, capture_output=True)
    der = pem_body(signature.read_text())
    assert der[:1] == b"\x30" and len(der) > 500
    assert not any(oid in der for oid in PAGE_HASH_OIDS)
