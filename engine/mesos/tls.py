"""TLS to the Mesos master: the client context, and what its failures mean in words.

A Mesos master built with SSL (LIBPROCESS_SSL_ENABLED) serves https on its one port; a
scheduler checks its certificate against a CA file, or the system's CAs. One context serves
every connection to the master: the SUBSCRIBE stream (engine/mesos/tls_stream.py), the
calls' lanes (engine/mesos/http1.py) and the start-up probe (tools/mesos_master.py), so
they all trust the same certificates and check the same host name.
"""

from __future__ import annotations

import http.client
import ssl
from dataclasses import dataclass

# OpenSSL's verify codes for a certificate that is valid but names another host.
_NAME_MISMATCH = frozenset({62, 64})  # X509_V_ERR_HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH
# What OpenSSL says when the bytes that came back are not TLS (a plain HTTP answer to our
# ClientHello is read as a record of an unknown version or an absurd length).
_NOT_TLS = frozenset(
    {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"}
)


class TLSSettingsError(ValueError):
    """A --ca-file, --client-cert or --client-key that cannot be used (names the file)."""


@dataclass(frozen=True)
class TLSSettings:
    """How to reach the master over TLS: the CA file its certificate must chain to (None:
    the system's CAs) and, optionally, our own certificate and key."""

    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    @property
    def trusted(self) -> str:
        """Whom the master's certificate must be trusted by, in words."""
        return f"the CA file {self.ca_file}" if self.ca_file else "the system's CAs"


class MasterTLS:
    """The settings and the one client context made of them (`client_context`)."""

    def __init__(self, settings: TLSSettings) -> None:
        self.settings = settings
        self.context = client_context(settings)

    def connection(self, address: str, *, timeout: float) -> http.client.HTTPSConnection:
        """An https connection (http.client's) to the master at HOST:PORT ``address``."""
        host, _, port = address.rpartition(":")
        return http.client.HTTPSConnection(host, int(port), timeout=timeout, context=self.context)

    def failure(self, error: BaseException, address: str) -> str | None:
        """`failure` with these settings."""
        return failure(error, address=address, settings=self.settings)


def client_context(settings: TLSSettings) -> ssl.SSLContext:
    """A context that verifies the master's certificate and host name; TLSSettingsError
    says which file cannot be used and why."""
    try:
        context = ssl.create_default_context(cafile=settings.ca_file)
    except (OSError, ssl.SSLError) as e:
        raise TLSSettingsError(
            _unusable("--ca-file", settings.ca_file, e, "a certificate")
        ) from None
    if settings.client_key and not settings.client_cert:
        raise TLSSettingsError("--client-key needs --client-cert (the certificate it signs)")
    if settings.client_cert:
        try:
            context.load_cert_chain(settings.client_cert, settings.client_key)
        except (OSError, ssl.SSLError) as e:
            files = ", ".join(f for f in (settings.client_cert, settings.client_key) if f)
            raise TLSSettingsError(
                _unusable("--client-cert/--client-key", files, e, "a certificate and its key")
            ) from None
    return context


def _unusable(option: str, path: str | None, error: BaseException, holds: str) -> str:
    if isinstance(error, FileNotFoundError):
        return f"{option} {path}: no such file"
    if isinstance(error, IsADirectoryError):
        return f"{option} {path}: a folder, not a file"
    if isinstance(error, ssl.SSLError):  # read, but not PEM (or a key that does not match)
        said = f" ({error.reason})" if error.reason else ""
        return f"{option} {path}: does not hold {holds} in PEM{said}"
    return f"{option} {path}: cannot read it: {error.strerror or error}"


def failure(error: BaseException, *, address: str, settings: TLSSettings) -> str | None:
    """What a TLS failure reaching the master at HOST:PORT ``address`` means, in one line,
    or None if ``error`` is not one (a refused or reset connection is the network's)."""
    host = address.rpartition(":")[0]
    if isinstance(error, ssl.SSLCertVerificationError):
        said = error.verify_message or error.reason or str(error)
        if error.verify_code in _NAME_MISMATCH:
            return f"the certificate of the master at {address} is not for {host} ({said})"
        return (
            f"the certificate of the master at {address} is not trusted by {settings.trusted} "
            f"({said})"
        )
    if isinstance(error, ssl.SSLError):
        if error.reason in _NOT_TLS:
            return (
                f"the master at {address} answers plain HTTP, not TLS: drop https:// "
                "(or --master-tls)"
            )
        return f"TLS with the master at {address} failed: {error.reason or error}"
    return None
