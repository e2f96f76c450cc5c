"""Test-signing driver images on Linux: an openssl-made code-signing certificate and osslsigncode.

x64 Windows loads only signed kernel images; with `bcdedit /set testsigning
on` any certificate will do. The CA and leaf are made once per folder
(default build/signing/). Signatures carry no page hashes: osslsigncode's
``-ph`` is known to write invalid ones (mtrojnar/osslsigncode#8), and
Windows then refuses the driver with error 577 (#86, #111). If Windows
still refuses a driver, the alternative is `signtool sign /fd sha256
/f test.pfx` inside the guest.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from harness.errors import ConfigError, HarnessError

SUBJECT_CA = "/CN=kcb-harness test CA"
SUBJECT_LEAF = "/CN=kcb-harness test driver signing"
_LEAF_EXTENSIONS = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=codeSigning,1.3.6.1.4.1.311.10.3.5\n"


class SigningError(HarnessError):
    """openssl or osslsigncode failed."""


def _run(args: list[str], cwd: Path) -> None:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SigningError(f"{args[0]} failed: {result.stderr.strip()[-400:]}")


def ensure_certificate(folder: Path) -> Path:
    """The PKCS#12 bundle (leaf key + chain) in ``folder``, created with openssl when missing.

    Raises:
        ConfigError: openssl is not installed.
    """
    if shutil.which("openssl") is None:
        raise ConfigError("openssl is not installed: run `make setup`")
    bundle = folder / "test-signing.p12"
    if bundle.is_file():
        return bundle
    folder.mkdir(parents=True, exist_ok=True)
    _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", SUBJECT_CA,
          "-keyout", "ca.key", "-out", "ca.crt", "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=keyCertSign,cRLSign"], folder)  # fmt: skip
    _run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", SUBJECT_LEAF, "-keyout", "leaf.key", "-out", "leaf.csr"], folder)
    (folder / "leaf.ext").write_text(_LEAF_EXTENSIONS)
    _run(["openssl", "x509", "-req", "-in", "leaf.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "3650",
          "-extfile", "leaf.ext", "-out", "leaf.crt"], folder)  # fmt: skip
    _run(["openssl", "pkcs12", "-export", "-inkey", "leaf.key", "-in", "leaf.crt", "-certfile", "ca.crt", "-passout", "pass:",
          "-out", bundle.name], folder)  # fmt: skip
    for leftover in ("leaf.csr", "leaf.ext"):
        (folder / leftover).unlink(missing_ok=True)
    return bundle


def sign(image: Path, bundle: Path) -> None:
    """Sign ``image`` in place (SHA-256, no page hashes), the last step before it is copied to a guest.

    Raises:
        ConfigError: osslsigncode is not installed.
        SigningError: signing failed.
    """
    if shutil.which("osslsigncode") is None:
        raise ConfigError("osslsigncode is not installed: run `make setup`")
    signed = image.with_suffix(image.suffix + ".signed")
    signed.unlink(missing_ok=True)
    _run(
        ["osslsigncode", "sign", "-pkcs12", str(bundle), "-pass", "", "-h", "sha256", "-in", str(image), "-out", str(signed)],
        image.parent,
    )
    signed.replace(image)


def verify(image: Path, ca: Path) -> str:
    """osslsigncode's verification report against our CA (raises when the signature is bad)."""
    result = subprocess.run(["osslsigncode", "verify", "-CAfile", str(ca), "-in", str(image)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SigningError(f"signature of {image.name} does not verify: {(result.stdout + result.stderr).strip()[-400:]}")
    return result.stdout
