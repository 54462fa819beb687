"""The throwaway servers of tests/servers.py: they start from anywhere, say why they cannot,
and leave nothing behind."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import tempfile
import time

import psycopg
import pytest
from servers import PostgresServer, ServerError, ZooKeeperServer, world_enterable_tempdir


@pytest.fixture
def private_folder(tmp_path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A 0700 folder as the working directory and $TMPDIR: where a checkout may lie."""
    folder = tmp_path / "private"
    folder.mkdir(mode=0o700)
    monkeypatch.chdir(folder)
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return str(folder)


def test_server_folders_are_made_where_any_user_can_enter(private_folder: str) -> None:
    folder = world_enterable_tempdir("tl-test-")
    try:
        assert not folder.startswith(private_folder)
        path = folder
        while path != "/":
            assert os.stat(path).st_mode & stat.S_IXOTH, path
            path = os.path.dirname(path)
    finally:
        os.rmdir(folder)


def test_postgres_starts_from_a_private_folder_and_leaves_nothing(private_folder: str) -> None:
    server = PostgresServer().start()
    try:
        with psycopg.connect(server.dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        folder = server.folder
    finally:
        server.stop()
    assert not os.path.exists(folder)
    server.stop()  # twice: nothing happens


@pytest.mark.parametrize(
    ("server", "reason"),
    [
        (PostgresServer(settings={"shared_buffers": "lots"}), "invalid value for parameter"),
        (ZooKeeperServer(tick_ms=-5), "minSessionTimeout must not be larger"),
    ],
    ids=["postgres", "zookeeper"],
)
def test_a_server_that_cannot_start_says_why_in_one_line(
    server: PostgresServer | ZooKeeperServer, reason: str
) -> None:
    with pytest.raises(ServerError) as failed:
        server.start()
    message = str(failed.value)
    assert "could not start: " in message and reason in message
    assert "\n" not in message
    assert not server.folder  # removed


def test_servers_are_stopped_and_removed_when_the_tests_are_killed() -> None:
    """A fixture's finalizer does not run when pytest is SIGKILLed (a CI timeout): the
    servers' reapers stop them and remove their folders."""
    script = (
        "import servers, time\n"
        "pg = servers.PostgresServer().start()\n"
        "zk = servers.ZooKeeperServer().start()\n"
        "print(pg.folder, pg.port, zk.folder, zk.port, flush=True)\n"
        "time.sleep(60)\n"
    )
    tests = os.path.dirname(os.path.abspath(__file__))
    child = subprocess.Popen(
        [sys.executable, "-c", script], cwd=tests, stdout=subprocess.PIPE, text=True
    )
    try:
        pg_folder, pg_port, zk_folder, zk_port = child.stdout.readline().split()  # type: ignore[union-attr]
    finally:
        child.kill()
        child.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        left = [f for f in (pg_folder, zk_folder) if os.path.exists(f)]
        listening = [p for p in (pg_port, zk_port) if _listening(int(p))]
        if not left and not listening:
            return
        time.sleep(0.1)
    raise AssertionError(f"left behind: folders {left}, ports {listening}")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.2):
            return True
    except OSError:
        return False
