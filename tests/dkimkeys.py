"""RSA key pairs for DKIM tests, made with openssl (fast, and no test key
checked into the repository)."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path


def _openssl(*args: str, data: bytes = b"") -> bytes:
    return subprocess.run(["openssl", *args], input=data, capture_output=True,
                          check=True).stdout


def keypair(tmp: Path, name: str, bits: int = 1024) -> tuple[bytes, bytes]:
    """(PKCS#1 PEM private key, DNS key record) for a new RSA key; the PEM
    is also left in ``tmp/<name>.pem``."""
    path = tmp / f"{name}.pem"
    _openssl("genrsa", "-traditional", "-out", str(path), str(bits))
    pem = path.read_bytes()
    der = _openssl("rsa", "-in", str(path), "-pubout", "-outform", "DER")
    return pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)
