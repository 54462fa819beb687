"""Throwaway certificates for a master served over TLS on this machine (tests, benchmarks):
a CA, and certificates it signs for the names given, made by the openssl command line
(Debian's; the `cryptography` package would be one more dependency for two commands).

Each key is an unencrypted P-256 key and every certificate is valid for two days: for a
test or a benchmark run, never for a real master.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import NamedTuple


class Issued(NamedTuple):
    """A certificate and its private key (PEM files)."""

    cert: Path
    key: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


_NEW_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def ca(folder: Path, name: str) -> Issued:
    """A self-signed CA named ``name``, as ``folder/name.pem`` and ``folder/name.key``."""
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    _openssl(
        *("req", "-x509", *_NEW_KEY, "-keyout", key, "-out", cert),
        *("-subj", f"/CN={name}", "-days", "2"),
        *("-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign"),
    )
    return Issued(cert, key)


def signed(folder: Path, name: str, names: str, by: Issued) -> Issued:
    """A certificate for ``names`` (a subjectAltName value: "IP:127.0.0.1,DNS:localhost")
    signed by the CA ``by``, as ``folder/name.pem`` and ``folder/name.key``."""
    cert, key, request = (folder / f"{name}{ext}" for ext in (".pem", ".key", ".csr"))
    extensions = folder / f"{name}.ext"
    extensions.write_text(f"basicConstraints=CA:FALSE\nsubjectAltName={names}\n")
    _openssl("req", *_NEW_KEY, "-keyout", key, "-out", request, "-subj", f"/CN={name}")
    _openssl(
        *("x509", "-req", "-in", request, "-CA", by.cert, "-CAkey", by.key),
        *("-set_serial", "2", "-out", cert, "-days", "2", "-extfile", extensions),
    )
    return Issued(cert, key)


def local_master(folder: Path) -> tuple[Issued, Issued]:
    """A CA, and a master certificate it signed for 127.0.0.1 and localhost."""
    authority = ca(folder, "test-ca")
    return authority, signed(folder, "master", "IP:127.0.0.1,DNS:localhost", authority)
