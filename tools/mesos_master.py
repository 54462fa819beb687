"""Finding the Mesos master `taskledger run` was pointed at, before anything is created.

``--master`` is ``HOST:PORT`` (``HOST`` alone means port 5050), ``http://HOST:PORT``,
``https://HOST:PORT`` or ``zk://HOST:PORT[,HOST:PORT...]/PATH``, the ZooKeeper ensemble and
the path the masters elect their leader under (Mesos's own ``--zk`` form). pymesos, the
driver, is given HOST:PORT or the zk:// address; for ``zk://`` its detector (kazoo) watches
the leader and follows it when it changes.

One rule says whether the master is reached over TLS: the scheme of a HOST:PORT master
(``https://``), or ``--master-tls`` (``tls=True``) for any master, the one way to say it for
``zk://``, whose leaders are HOST:PORT without a scheme. Every master then reached (the
leader ZooKeeper names, the one a redirect names) is reached the same way.

`find` checks the address and waits, up to a bound, for the master to answer (and, for
``zk://``, for ZooKeeper to answer and name a leader), so that a wrong address ends in one
line naming it and not in a traceback, before the log folder exists. A master that answers
but not as it should over TLS (a certificate not trusted or for another host, plain HTTP
where TLS was asked for, or the reverse) ends it at once: waiting cannot change that. What
pymesos cannot do is refused here by name rather than failing later: IPv6 literals (it
splits the address on ':'), credentials inside a zk:// address.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any

from engine.mesos.tls import MasterTLS

DEFAULT_PORT = 5050
ZK_SCHEMES = ("zk://", "zoo://")
# Mesos (>= 0.24) writes its MasterInfo as JSON in znodes named json.info_<sequence>.
_LEADER_PREFIX = "json.info_"
_RETRY = 0.5  # seconds between attempts while waiting for the master
# What a master serving TLS only does to a plain request: drops it unanswered, or answers
# with an alert (not a status line). `probe` then asks it for a TLS handshake to say so.
_DROPPED = (ConnectionResetError, http.client.BadStatusLine)


class MasterAddressError(ValueError):
    """A --master value that is not an address pymesos can use (names the value)."""


class MasterUnreachable(RuntimeError):
    """Nothing answered as a Mesos master at the address within the wait."""


class MasterTLSError(RuntimeError):
    """The master answered, but TLS with it cannot work as configured (says why)."""


@dataclass(frozen=True)
class MasterAddress:
    """A checked --master value."""

    text: str  # what pymesos is given
    zk_hosts: str | None = None  # "h1:2181,h2:2181" for zk://
    zk_path: str | None = None  # "/mesos"
    tls: bool = False  # every master is reached over TLS

    @property
    def is_zk(self) -> bool:
        return self.zk_hosts is not None


@dataclass(frozen=True)
class FoundMaster:
    """The master that answered: its address, its version, and how it was found."""

    address: str  # HOST:PORT
    version: str
    via: str | None = None  # the zk:// address it was found through


def _host_port(text: str, *, default_port: int | None, what: str) -> tuple[str, int]:
    if text.startswith("["):
        raise MasterAddressError(f"{what} {text!r}: pymesos cannot use IPv6 literals")
    host, sep, port = text.partition(":")
    if not host:
        raise MasterAddressError(f"{what} {text!r}: no host")
    if not sep:
        if default_port is None:
            raise MasterAddressError(f"{what} {text!r}: give HOST:PORT")
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise MasterAddressError(f"{what} {text!r}: the port must be a number 1-65535")
    return host, int(port)


# A HOST:PORT master's scheme -> whether it is reached over TLS.
_HTTP_SCHEMES = {"http://": False, "https://": True}


def parse(text: str, *, tls: bool = False) -> MasterAddress:
    """The address, checked, reached over TLS if its scheme or ``tls`` (--master-tls) says
    so; MasterAddressError says what is wrong with it."""
    text = text.strip()
    lowered = text.lower()
    for scheme in ZK_SCHEMES:
        if lowered.startswith(scheme):
            return _parse_zk(text, text[len(scheme) :], tls=tls)
    rest = text
    for scheme, secure in _HTTP_SCHEMES.items():
        if lowered.startswith(scheme):
            if tls and not secure:
                raise MasterAddressError(
                    f"--master {text!r} says plain HTTP and --master-tls says TLS: give "
                    "https://HOST:PORT, or drop --master-tls"
                )
            tls = secure
            rest = text[len(scheme) :].rstrip("/")
            if "/" in rest:
                raise MasterAddressError(f"--master {text!r}: give {scheme}HOST:PORT, no path")
            break
    else:
        if "://" in text:
            raise MasterAddressError(
                f"--master {text!r}: give HOST:PORT, https://HOST:PORT or zk://HOST:PORT/PATH"
            )
    host, port = _host_port(rest, default_port=DEFAULT_PORT, what="--master")
    return MasterAddress(f"{host}:{port}", tls=tls)


def _parse_zk(text: str, rest: str, *, tls: bool) -> MasterAddress:
    hosts, slash, path = rest.partition("/")
    if "@" in hosts:
        raise MasterAddressError(
            f"--master {masked(text)!r}: pymesos's ZooKeeper detector cannot authenticate "
            "(no user:password@ in the address)"
        )
    if not slash or not path.strip("/"):
        raise MasterAddressError(
            f"--master {text!r}: give the masters' ZooKeeper path, e.g. "
            f"zk://{hosts or 'HOST:2181'}/mesos"
        )
    if not hosts:
        raise MasterAddressError(f"--master {text!r}: no ZooKeeper host")
    for server in hosts.split(","):
        _host_port(server, default_port=None, what="ZooKeeper server")
    return MasterAddress(text, hosts, "/" + path.strip("/"), tls=tls)


def masked(text: str) -> str:
    """``--master`` as it may be printed: any password in it replaced."""
    scheme, sep, rest = text.partition("://")
    userinfo, at, hosts = rest.partition("@")
    if not at:
        return text
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user}:****@{hosts}"


def probe(address: str, timeout: float, tls: MasterTLS | None = None) -> str:
    """The version a Mesos master at HOST:PORT reports (GET /version, as pymesos asks),
    over TLS with ``tls``; raises OSError if nothing answers, MasterTLSError if TLS with it
    cannot work, MasterUnreachable if something else answers."""
    if tls is None:
        host, _, port = address.rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    else:
        conn = tls.connection(address, timeout=timeout)
    try:
        conn.request("GET", "/version")
        response = conn.getresponse()
        status, body = response.status, response.read(65536)
    except (OSError, http.client.HTTPException) as e:
        raise _why(e, address, timeout, tls) from None
    finally:
        conn.close()
    if status != 200:
        raise MasterUnreachable(
            f"{address} answers HTTP {status} to GET /version: not a Mesos master"
        )
    try:
        version = json.loads(body)["version"]
        tuple(int(part) for part in str(version).split("."))  # what pymesos parses
    except (ValueError, KeyError, TypeError):
        raise MasterUnreachable(
            f"{address} answers GET /version with {body[:80]!r}: not a Mesos master"
        ) from None
    return str(version)


def _why(
    error: BaseException, address: str, timeout: float, tls: MasterTLS | None
) -> BaseException:
    """What a failed GET /version means: a MasterTLSError if TLS is why (waiting will not
    help), else the OSError to wait on (or a MasterUnreachable for an answer not HTTP)."""
    if tls is not None:
        said = tls.failure(error, address)
        if said is not None:
            return MasterTLSError(said)
    elif isinstance(error, _DROPPED) and speaks_tls(address, timeout):
        return MasterTLSError(
            f"the master at {address} answers TLS only, not plain HTTP: give --master "
            f"https://{address} (and --ca-file if its CA is not the system's)"
        )
    if isinstance(error, OSError):
        return error
    return MasterUnreachable(f"{address} answers GET /version with no HTTP: {error!r}")


def speaks_tls(address: str, timeout: float) -> bool:
    """Whether whatever listens at HOST:PORT completes a TLS handshake (its certificate not
    checked: this only tells TLS from not TLS)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    host, _, port = address.rpartition(":")
    try:
        with (
            socket.create_connection((host, int(port)), timeout=timeout) as sock,
            context.wrap_socket(sock, server_hostname=host),
        ):
            return True
    except OSError:
        return False


def _wait_for(address: str, deadline: float, what: str, tls: MasterTLS | None) -> str:
    last: OSError | None = None
    while True:
        left = deadline - time.monotonic()
        try:
            return probe(address, max(0.5, min(5.0, left)), tls)
        except OSError as e:
            last = e
        left = deadline - time.monotonic()
        if left <= 0:
            reason = getattr(last, "strerror", None) or str(last) or type(last).__name__
            raise MasterUnreachable(f"{what} {address}: {reason}")
        time.sleep(min(_RETRY, left))


def leader(zk: Any, path: str) -> str | None:
    """HOST:PORT of the leading master registered under ``path``, or None if none is (the
    lowest sequence number leads, as pymesos's detector reads it)."""
    try:
        children = zk.get_children(path)
    except Exception as e:  # kazoo.exceptions.NoNodeError: no master ever registered
        if type(e).__name__ == "NoNodeError":
            return None
        raise
    infos = sorted(c for c in children if c.startswith(_LEADER_PREFIX))
    if not infos:
        return None
    data, _ = zk.get(f"{path}/{infos[0]}")
    info = json.loads(data.decode("utf-8"))
    address = info.get("address") or {}
    ip, port = address.get("ip"), address.get("port")
    return f"{ip}:{port}" if ip and port else None


def find(address: MasterAddress, timeout: float, tls: MasterTLS | None = None) -> FoundMaster:
    """Waits up to ``timeout`` seconds for the master to answer (over TLS with ``tls``);
    MasterUnreachable names what did not (the master, ZooKeeper, or the leader it should
    name), MasterTLSError why TLS with it cannot work."""
    deadline = time.monotonic() + max(0.0, timeout)
    if not address.is_zk:
        version = _wait_for(address.text, deadline, "no Mesos master at", tls)
        return FoundMaster(address.text, version)
    master = _zk_leader(address, deadline)
    version = _wait_for(master, deadline, f"the leading master named by {address.text} is", tls)
    return FoundMaster(master, version, address.text)


def _zk_leader(address: MasterAddress, deadline: float) -> str:
    from kazoo.client import KazooClient
    from kazoo.handlers.threading import KazooTimeoutError

    assert address.zk_hosts is not None and address.zk_path is not None
    # kazoo logs every refused connection; the one line below says it once.
    quiet = logging.getLogger("kazoo")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    zk = KazooClient(hosts=address.zk_hosts, timeout=10.0, connection_retry=None)
    try:
        try:
            zk.start(timeout=max(0.1, deadline - time.monotonic()))
        except KazooTimeoutError:
            raise MasterUnreachable(
                f"no ZooKeeper answered at {address.zk_hosts} (--master {address.text})"
            ) from None
        while True:
            found = leader(zk, address.zk_path)
            if found is not None:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                raise MasterUnreachable(
                    f"ZooKeeper at {address.zk_hosts} names no leading Mesos master under "
                    f"{address.zk_path} (--master {address.text})"
                )
            time.sleep(min(_RETRY, left))
    finally:
        try:
            zk.stop()
            zk.close()
        finally:
            quiet.setLevel(level)
