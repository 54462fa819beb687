"""The fixtures many test modules share: the command-line tests' logs, Chromium, the servers.

``story_log`` and ``partition_log`` are the two logs of tests/cli_log.py (a short run; a
partition the real saga handled). They are session-scoped, so one build serves every module
that reads them, because no test writes to them: every test that writes to or damages a log
takes a ``private_copy`` first, and each fixture checks at the end of the session that its
log's data file and folder are exactly as built (a test that wrote to one fails there).

``chromium`` is Debian's headless Chromium (tests/headless.py), looked for once a session.

``postgres`` and ``zookeeper`` are session-wide PostgreSQL and ZooKeeper servers
(tests/servers.py), started on first use: a session that runs no such test starts neither. A
server that cannot start fails those tests with one line saying why; every server started is
stopped and its folder removed at the end, also after failures.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from cli_log import build, build_partition, fingerprint
from headless import find_chromium
from servers import PostgresServer, ServerError, ZooKeeperServer


@contextmanager
def _unchanged(path: str) -> Iterator[None]:
    built = fingerprint(path)
    yield
    assert fingerprint(path) == built, f"a test wrote to the shared log {path}"


@pytest.fixture(scope="session")
def story_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The story's log (tests/cli_log.py): read it; write only to a private_copy."""
    path = str(tmp_path_factory.mktemp("story") / "log")
    build(path)
    with _unchanged(path):
        yield path


@pytest.fixture(scope="session")
def partition_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict]]:
    """The partition story's log (tests/cli_log.py) and the ids that matter in it."""
    path = str(tmp_path_factory.mktemp("partition") / "log")
    ids = build_partition(path)
    with _unchanged(path):
        yield path, ids


@pytest.fixture(scope="session")
def chromium() -> str:
    """The headless Chromium binary (tests/headless.py), installed on first use if missing."""
    return find_chromium()


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
