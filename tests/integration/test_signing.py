"""Test-signing the built drivers with openssl + osslsigncode, for real."""

from __future__ import annotations

import shutil
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
