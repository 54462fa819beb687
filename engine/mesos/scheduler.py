"""The pymesos adapter: a pymesos Scheduler whose callbacks feed the SchedulerCore.

pymesos must be imported in the main thread (it installs a SIGINT handler); this module is
imported by the runtime, which runs there. Every callback is guarded by the core: nothing
raises into pymesos's IO thread.
"""

from __future__ import annotations

import http.client
import json
import logging
from typing import Any

from pymesos import MesosSchedulerDriver, Scheduler

from engine.mesos import tls_stream
from engine.mesos.core import SchedulerCore
from engine.mesos.tls import MasterTLS

log = logging.getLogger("taskledger.driver")
tls_stream.install()


class _Driver(MesosSchedulerDriver):
    """pymesos's driver, keeping the master's id from SUBSCRIBED (pymesos drops it, and it
    is what makes a master failover visible in the log).

    With ``tls`` every connection it makes to a master is TLS: the stream
    (engine/mesos/tls_stream.py), the GET /version it asks each new master, and its own
    calls. A master is a HOST:PORT to pymesos, also the leader a redirect or ZooKeeper
    names, so the scheme stays the one the driver was made with."""

    master_id: str | None = None
    tls: MasterTLS | None = None

    def on_subscribed(self, info: dict[str, Any]) -> None:
        master_info = info.get("master_info") or {}
        self.master_id = master_info.get("id") or self.master
        super().on_subscribed(info)

    def _get_version(self, master: str | None) -> str | None:
        if self.tls is None or master is None:
            return super()._get_version(master)
        conn = self.tls.connection(master, timeout=self._timeout)
        try:  # pymesos's question (it decides the GPU_RESOURCES capability), over TLS
            conn.request("GET", "/version")
            response = conn.getresponse()
            body = response.read()
            return json.loads(body)["version"] if response.status == 200 else None
        except (OSError, http.client.HTTPException, ValueError, KeyError) as e:
            log.warning("GET /version of %s: %s", master, self.tls.failure(e, master) or e)
            return None
        finally:
            conn.close()

    def _get_conn(self) -> Any:
        if self.tls is None or self._conn is not None or not self.connected:
            return super()._get_conn()
        self._conn = self.tls.connection(self.master, timeout=self._timeout)
        return self._conn


class LedgerScheduler(Scheduler):
    """pymesos callbacks -> SchedulerCore."""

    def __init__(self, core: SchedulerCore) -> None:
        self.core = core

    def registered(self, driver: Any, framework_id: dict, master_info: dict) -> None:
        self.core.registered(framework_id["value"], getattr(driver, "master_id", None) or "")

    def reregistered(self, driver: Any, master_info: dict) -> None:
        self.core.reregistered(driver.framework_id, getattr(driver, "master_id", None) or "")

    def disconnected(self, driver: Any) -> None:
        self.core.disconnected()

    def resourceOffers(self, driver: Any, offers: list[dict]) -> None:  # noqa: N802
        self.core.offers(offers)

    def offerRescinded(self, driver: Any, offer_id: dict) -> None:  # noqa: N802
        # Offers are used at once or declined; only one we failed to answer is still held.
        self.core.offer_rescinded(offer_id["value"])

    def statusUpdate(self, driver: Any, status: dict) -> None:  # noqa: N802
        self.core.update(status)

    def error(self, driver: Any, message: str) -> None:
        self.core.error(message)
        if "removed" in message.lower():
            # "Framework has been removed": pymesos would resubscribe forever. Stop; the
            # supervisor decides what next (a removed framework's tasks are gone).
            driver.stop(failover=True)

    def processHeartBeat(self, driver: Any) -> None:  # noqa: N802
        self.core.heartbeat()

    def slaveLost(self, driver: Any, agent_id: dict) -> None:  # noqa: N802
        pass  # the master sends the tasks' updates; reconciliation covers the rest

    def executorLost(self, driver: Any, executor_id: dict, agent_id: dict, status: Any) -> None:  # noqa: N802
        pass


def make_driver(
    core: SchedulerCore,
    master: str,
    framework: dict[str, Any],
    *,
    http_timeout: float = 30.0,
    credential: tuple[str, str] | None = None,
    tls: MasterTLS | None = None,
) -> _Driver:
    """A pymesos driver for ``core``: failover always on (a driver that stops or aborts
    must never TEARDOWN the framework), explicit acknowledgements (after the append), and
    an explicit HTTP timeout (pymesos's default is a day). ``credential`` (principal,
    secret) goes with pymesos's SUBSCRIBE as HTTP basic authentication; ``tls``, if given,
    is how every connection to the master is made. It reads the event
    stream; the core's calls go through its own sender (engine/mesos/sender.py), which
    sends the same credential."""
    principal, secret = credential if credential is not None else (None, None)
    driver = _Driver(
        LedgerScheduler(core),
        framework,
        master,
        use_addict=False,
        implicit_acknowledgements=False,
        failover=True,
        timeout=http_timeout,
        principal=principal,
        secret=secret,
    )
    driver.tls = tls
    return driver
