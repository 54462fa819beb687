"""Finding the Mesos master `taskledger run` was pointed at, before anything is created.

``--master`` is ``HOST:PORT`` (``HOST`` alone means port 5050) or
``zk://HOST:PORT[,HOST:PORT...]/PATH``, the ZooKeeper ensemble and the path the masters
elect their leader under (Mesos's own ``--zk`` form). pymesos, the driver, takes both; for
``zk://`` its detector (kazoo) watches the leader and follows it when it changes.

`find` checks the address and waits, up to a bound, for the master to answer (and, for
``zk://``, for ZooKeeper to answer and name a leader), so that a wrong address ends in one
line naming it and not in a traceback, before the log folder exists. What pymesos cannot do
is refused here by name rather than failing later: TLS (it speaks plain HTTP), IPv6
literals (it splits the address on ':'), credentials inside a zk:// address.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

DEFAULT_PORT = 5050
ZK_SCHEMES = ("zk://", "zoo://")
# Mesos (>= 0.24) writes its MasterInfo as JSON in znodes named json.info_<sequence>.
_LEADER_PREFIX = "json.info_"
_RETRY = 0.5  # seconds between attempts while waiting for the master


class MasterAddressError(ValueError):
    """A --master value that is not an address pymesos can use (names the value)."""


class MasterUnreachable(RuntimeError):
    """Nothing answered as a Mesos master at the address within the wait."""


@dataclass(frozen=True)
class MasterAddress:
    """A checked --master value."""

    text: str  # what pymesos is given
    zk_hosts: str | None = None  # "h1:2181,h2:2181" for zk://
    zk_path: str | None = None  # "/mesos"

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


def parse(text: str) -> MasterAddress:
    """The address, checked; MasterAddressError says what is wrong with it."""
    text = text.strip()
    lowered = text.lower()
    if lowered.startswith("https://"):
        raise MasterAddressError(
            f"--master {text!r}: pymesos speaks plain HTTP only, so TLS to the master is not "
            "supported; give HOST:PORT (see the README on TLS)"
        )
    if lowered.startswith("http://"):
        raise MasterAddressError(f"--master {text!r}: give HOST:PORT, without a scheme")
    for scheme in ZK_SCHEMES:
        if lowered.startswith(scheme):
            return _parse_zk(text, text[len(scheme) :])
    if "://" in text:
        raise MasterAddressError(f"--master {text!r}: give HOST:PORT or zk://HOST:PORT/PATH")
    host, port = _host_port(text, default_port=DEFAULT_PORT, what="--master")
    return MasterAddress(f"{host}:{port}")


def _parse_zk(text: str, rest: str) -> MasterAddress:
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
    return MasterAddress(text, hosts, "/" + path.strip("/"))


def masked(text: str) -> str:
    """``--master`` as it may be printed: any password in it replaced."""
    scheme, sep, rest = text.partition("://")
    userinfo, at, hosts = rest.partition("@")
    if not at:
        return text
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user}:****@{hosts}"


def probe(address: str, timeout: float) -> str:
    """The version a Mesos master at HOST:PORT reports (GET /version, as pymesos asks);
    raises OSError if nothing answers, MasterUnreachable if something else does."""
    try:
        with urllib.request.urlopen(f"http://{address}/version", timeout=timeout) as response:
            body = response.read(65536)
    except urllib.error.HTTPError as e:
        raise MasterUnreachable(
            f"{address} answers HTTP {e.code} to GET /version: not a Mesos master"
        ) from None
    except urllib.error.URLError as e:
        reason = e.reason
        raise reason if isinstance(reason, OSError) else OSError(str(reason)) from None
    try:
        version = json.loads(body)["version"]
        tuple(int(part) for part in str(version).split("."))  # what pymesos parses
    except (ValueError, KeyError, TypeError):
        raise MasterUnreachable(
            f"{address} answers GET /version with {body[:80]!r}: not a Mesos master"
        ) from None
    return str(version)


def _wait_for(address: str, deadline: float, what: str) -> str:
    last: OSError | None = None
    while True:
        left = deadline - time.monotonic()
        try:
            return probe(address, max(0.5, min(5.0, left)))
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


def find(address: MasterAddress, timeout: float) -> FoundMaster:
    """Waits up to ``timeout`` seconds for the master to answer; MasterUnreachable names
    what did not (the master, ZooKeeper, or the leader it should name)."""
    deadline = time.monotonic() + max(0.0, timeout)
    if not address.is_zk:
        return FoundMaster(address.text, _wait_for(address.text, deadline, "no Mesos master at"))
    master = _zk_leader(address, deadline)
    version = _wait_for(master, deadline, f"the leading master named by {address.text} is")
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
