"""Session-wide PostgreSQL and ZooKeeper servers (tests/servers.py), started on first use.

A test that names ``postgres`` or ``zookeeper`` gets the session's server; a session that
runs no such test starts neither. A server that cannot start fails those tests with one
line saying why; every server started is stopped and its folder removed at the end, also
after failures.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from servers import PostgresServer, ServerError, ZooKeeperServer


def _serve(server: PostgresServer | ZooKeeperServer) -> Iterator:
    try:
        server.start()
    except ServerError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    yield from _serve(PostgresServer())


@pytest.fixture(scope="session")
def zookeeper() -> Iterator[ZooKeeperServer]:
    yield from _serve(ZooKeeperServer())
