"""`taskledger run` against a master that serves TLS (`taskledger sim --tls-cert/--tls-key`),
with certificates made here (tools/throwaway_pki.py: the openssl command line): a CA, a
master certificate for 127.0.0.1 and localhost signed by it, one for another host name
signed by it, and a second CA that signed nothing of the master's.

Over TLS the job converges (every instance RUNNING, its updates acknowledged), a scale-down
kills a task and an operator's reconciliation is answered: the SUBSCRIBE stream (pymesos's
IO loop on a TLS socket) and the calls' lanes both work. Each way TLS cannot work is one
line, exit status 2, and no log folder: a certificate not trusted by the CA file, one for
another host, a CA file missing or not PEM, an https master that answers plain HTTP and a
plain one that answers TLS only."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

import pytest
from click.testing import CliRunner

from engine.mesos.tls import MasterTLS, TLSSettings
from engine.mesos.tls_stream import _TLSSocket
from tools import throwaway_pki
from tools.cli import cli
from tools.readonly import ReadOnlyLedger
from tools.sim_master.cluster import SimConfig
from tools.sim_master.server import BackgroundSim

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEDGER_")}
NO_SETTINGS = {k: None for k in os.environ if k.startswith("TASKLEDGER_")}  # for CliRunner


class PKI(NamedTuple):
    ca: Path  # the CA that signed the master's certificates
    other_ca: Path  # a CA that signed none of them
    cert: Path  # the master's, for 127.0.0.1 and localhost
    key: Path
    wrong_cert: Path  # the master's, for master.example only
    wrong_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    folder = tmp_path_factory.mktemp("pki")
    ca, master = throwaway_pki.local_master(folder)
    other = throwaway_pki.ca(folder, "other-ca")
    wrong = throwaway_pki.signed(folder, "elsewhere", "DNS:master.example", ca)
    return PKI(ca.cert, other.cert, master.cert, master.key, wrong.cert, wrong.key)


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


# -- the stream's socket: nothing left inside the SSL object -----------------------------------


def test_a_read_hands_over_everything_already_decrypted(pki):
    """One TLS record holds up to 16 KB and pymesos reads 4 KB at a time: what a read
    leaves inside the SSL object, select never sees, so it would wait for the master's
    next bytes (a heartbeat, 15 s later). The stream's socket hands all of it over."""
    listener = socket.create_server(("127.0.0.1", 0))
    payload = os.urandom(12_000)  # one record, three of pymesos's reads
    sent = threading.Event()

    def serve() -> None:
        sock, _ = listener.accept()
        with server_context(pki.cert, pki.key).wrap_socket(sock, server_side=True) as tls:
            tls.sendall(payload)
            sent.set()
            tls.recv(1)  # until the client closes

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    context = MasterTLS(TLSSettings(ca_file=str(pki.ca))).context
    with context.wrap_socket(
        socket.create_connection(listener.getsockname()), server_hostname="127.0.0.1"
    ) as raw:
        assert sent.wait(10)
        raw.setblocking(False)
        stream = _TLSSocket(raw)
        got = b""
        while not got:  # as pymesos's loop: select, then read (TLS 1.3's tickets come first)
            assert select.select([stream], [], [], 5)[0]
            with contextlib.suppress(BlockingIOError):
                got = stream.recv(4096)
        assert got == payload  # one read: the whole record, not 4 KB of it
        assert raw.pending() == 0
        with pytest.raises(BlockingIOError):  # nothing more yet: pymesos's EAGAIN
            stream.recv(4096)
    server.join(10)
    listener.close()


# -- a job over TLS -------------------------------------------------------------------------------


def _https_json(url: str, ca: Path) -> dict:
    import json
    import urllib.request

    context = ssl.create_default_context(cafile=str(ca))
    with urllib.request.urlopen(url, timeout=5, context=context) as response:
        return json.loads(response.read())


def one_running(sim_url: str, ca: Path) -> bool:
    """Whether the simulated master at ``sim_url`` (https) runs one task, and only it."""
    tasks = _https_json(f"{sim_url}/state", ca)["tasks"]
    return [t["agent_state"] for t in tasks] == ["TASK_RUNNING"]


def _until(predicate, timeout: float, what: str, proc: subprocess.Popen, err: Path) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, err.read_text()
        assert time.monotonic() < deadline, f"{what}: {err.read_text()}"
        time.sleep(0.2)


def test_a_job_converges_is_scaled_down_and_reconciled_over_tls(pki, tmp_path):
    sim = subprocess.Popen(
        [
            *(sys.executable, "-m", "tools.cli", "sim", "--port", "0", "--agents", "2"),
            *("--time-scale", "20", "--tls-cert", pki.cert, "--tls-key", pki.key),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=CLEAN_ENV,
    )
    log, err = tmp_path / "log", tmp_path / "stderr"
    try:
        banner = sim.stdout.readline()  # taskledger sim: master on 127.0.0.1:PORT (https), ...
        assert "(https)" in banner, banner
        address = banner.split(" on ", 1)[1].split(" ", 1)[0]
        state = f"https://{address}/state"

        def live() -> dict[str, str]:
            return {
                t["task_id"]: t["agent_state"]
                for t in _https_json(state, pki.ca)["tasks"]
                if t["agent_state"] in ("TASK_STAGING", "TASK_STARTING", "TASK_RUNNING")
            }

        def acknowledged_running() -> set[str]:
            acks = _https_json(state, pki.ca)["acknowledged"]
            return {a["task_id"] for a in acks if a["state"] == "TASK_RUNNING"}

        run = start_run(
            *("--log", str(log), "--master", f"https://{address}", "--ca-file", str(pki.ca)),
            *("--instances", "2", "--heartbeat", "0.75"),
            stderr=err,
        )
        try:
            both = lambda: sorted(live().values()) == ["TASK_RUNNING"] * 2  # noqa: E731
            _until(both, 45, "two tasks RUNNING", run, err)
            _until(lambda: set(live()) <= acknowledged_running(), 15, "acked", run, err)
            scaled = subprocess.run(
                [sys.executable, "-m", "tools.cli", "ctl", "scale", "1", "--log", str(log)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=30,
                env=CLEAN_ENV,
            )
            assert scaled.returncode == 0, scaled.stderr
            _until(lambda: len(live()) == 1, 30, "one task killed", run, err)
            run.send_signal(signal.SIGUSR1)  # an explicit reconciliation, now
            _until(lambda: _operators_run_answered(log), 30, "reconciliation", run, err)
        finally:
            run.send_signal(signal.SIGTERM)
            code = run.wait(30)
        assert code == 0, err.read_text()
    finally:
        sim.terminate()
        sim.wait(30)
    killed = [t for t in _events(log, "StatusUpdateReceived") if t.state == "TASK_KILLED"]
    assert len(killed) == 1, killed
    started = err.read_text().splitlines()[0]  # the start-up line says how it connected
    assert f"master {address} over TLS (trusting the CA file {pki.ca})," in started, started


def start_run(*args: str, stderr: Path) -> subprocess.Popen:
    """`taskledger run` in a process of its own, its clocks compressed 20 times (as the
    simulated master's), its stderr into the file."""
    with open(stderr, "w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "tools.cli", "run", "--time-scale", "20", *args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=CLEAN_ENV,
        )


def _events(log: Path, topic: str) -> list:
    """The log's events of one kind (read-only: also while `run` writes it)."""
    with ReadOnlyLedger.open(log) as ledger:
        return [e for _, e in ledger.events(1) if type(e).__name__ == topic]


def _operators_run_answered(log: Path) -> bool:
    """Whether a reconciliation run an operator started completed with answers."""
    started = {e.run_id for e in _events(log, "ReconciliationStarted") if e.trigger == "operator"}
    return any(e.run_id in started and e.answers for e in _events(log, "ReconciliationCompleted"))


# -- what cannot work: one line, exit 2, nothing left behind ------------------------------------


class Masters(NamedTuple):
    tls: str  # HOST:PORT of a master with the right certificate
    wrong_name: str  # ... with a certificate for master.example
    plain: str  # ... serving plain HTTP


@pytest.fixture(scope="module")
def masters(pki):
    config = SimConfig(agents=1)
    with (
        BackgroundSim(config, ssl_context=server_context(pki.cert, pki.key)) as tls,
        BackgroundSim(config, ssl_context=server_context(pki.wrong_cert, pki.wrong_key)) as wrong,
        BackgroundSim(config) as plain,
    ):
        yield Masters(tls.address, wrong.address, plain.address)


def refused(tmp_path: Path, *args: str) -> str:
    """The one line `taskledger run` refuses with (in this process: it refuses before it
    configures logging or imports the driver); its log folder must not exist."""
    log = tmp_path / "log"
    result = CliRunner().invoke(
        cli,
        ["run", "--log", str(log), "--master-timeout", "5", "--api", "off", *args],
        env=NO_SETTINGS,
    )
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    assert not log.exists()
    return lines[0]


def test_a_certificate_the_ca_file_does_not_trust(pki, masters, tmp_path):
    line = refused(tmp_path, "--master", f"https://{masters.tls}", "--ca-file", str(pki.other_ca))
    assert line == (
        f"taskledger run: the certificate of the master at {masters.tls} is not trusted by "
        f"the CA file {pki.other_ca} (unable to get local issuer certificate)"
    )


def test_without_a_ca_file_the_systems_cas_decide(masters, tmp_path):
    line = refused(tmp_path, "--master", f"https://{masters.tls}")
    assert f"{masters.tls} is not trusted by the system's CAs" in line, line


def test_a_certificate_for_another_host(pki, masters, tmp_path):
    line = refused(tmp_path, "--master", f"https://{masters.wrong_name}", "--ca-file", str(pki.ca))
    assert line.startswith(
        f"taskledger run: the certificate of the master at {masters.wrong_name} is not for "
        "127.0.0.1 (IP address mismatch"
    ), line


@pytest.mark.parametrize(
    ("ca_file", "says"),
    [
        ("missing.pem", "no such file"),
        (".", "a folder, not a file"),
        ("master.key", "does not hold a certificate in PEM (NO_CERTIFICATE_OR_CRL_FOUND)"),
    ],
)
def test_a_ca_file_that_cannot_be_used(pki, masters, tmp_path, ca_file, says):
    path = os.path.normpath(pki.ca.parent / ca_file)
    line = refused(tmp_path, "--master", f"https://{masters.tls}", "--ca-file", path)
    assert line == f"taskledger run: --ca-file {path}: {says}"


def test_an_https_master_that_answers_plain_http(pki, masters, tmp_path):
    line = refused(tmp_path, "--master", f"https://{masters.plain}", "--ca-file", str(pki.ca))
    assert line == (
        f"taskledger run: the master at {masters.plain} answers plain HTTP, not TLS: drop "
        "https:// (or --master-tls)"
    )


def test_a_plain_master_that_answers_tls_only(masters, tmp_path):
    line = refused(tmp_path, "--master", masters.tls)
    assert line == (
        f"taskledger run: the master at {masters.tls} answers TLS only, not plain HTTP: give "
        f"--master https://{masters.tls} (and --ca-file if its CA is not the system's)"
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--master", "m:5050", "--ca-file", "ca.pem"), "--ca-file is for TLS to the master"),
        (("--master", "http://m:5050", "--master-tls"), "says plain HTTP and --master-tls"),
        (("--master", "https://m:5050", "--client-key", "k.pem"), "--client-key needs"),
    ],
)
def test_tls_settings_that_contradict_each_other(tmp_path, args, says):
    assert says in refused(tmp_path, *args)


def test_the_tls_settings_come_from_a_file_and_the_environment(pki, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(f'master = "zk://z:2181/mesos"\nmaster-tls = true\nca-file = "{pki.ca}"\n')
    result = CliRunner().invoke(
        cli,
        ["run", "--config", str(config), "--print-config"],
        env={**NO_SETTINGS, "TASKLEDGER_CLIENT_CERT": "/etc/taskledger/me.pem"},
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert f"master-tls = true  # file: {config}" in lines
    assert f'ca-file = "{pki.ca}"  # file: {config}' in lines
    assert 'client-cert = "/etc/taskledger/me.pem"  # environment: TASKLEDGER_CLIENT_CERT' in lines


# -- a client certificate, and masters found through ZooKeeper ----------------------------------


def test_a_master_that_asks_for_a_client_certificate(pki):
    """--client-cert/--client-key: the master (CERT_REQUIRED, our CA) answers with one,
    and does not without."""
    from tools.mesos_master import probe

    context = server_context(pki.cert, pki.key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(pki.ca)
    with BackgroundSim(SimConfig(agents=1), ssl_context=context) as sim:
        ours = TLSSettings(ca_file=str(pki.ca), client_cert=str(pki.cert), client_key=str(pki.key))
        assert probe(sim.address, 5, MasterTLS(ours)) == "1.11.0"
        with pytest.raises(OSError):  # the master drops it after the handshake
            probe(sim.address, 5, MasterTLS(TLSSettings(ca_file=str(pki.ca))))


@pytest.fixture
def zk_path(zookeeper):
    """A fresh masters' path in the session's ZooKeeper, and a way to register a master in
    it as Mesos does (its MasterInfo as JSON in an ephemeral json.info_ znode)."""
    import json
    import uuid

    from kazoo.client import KazooClient

    client = KazooClient(hosts=zookeeper.hosts)
    client.start(timeout=10)
    path = f"/mesos-tls-{uuid.uuid4().hex[:8]}"

    def register(address: str) -> None:
        host, port = address.rsplit(":", 1)
        info = {"address": {"hostname": host, "ip": host, "port": int(port)}, "hostname": host}
        client.create(
            f"{path}/json.info_",
            json.dumps(info).encode(),
            ephemeral=True,
            sequence=True,
            makepath=True,
        )

    try:
        yield f"zk://{zookeeper.hosts}{path}", register
    finally:
        client.delete(path, recursive=True)
        client.stop()
        client.close()


def test_the_leader_zookeeper_names_is_reached_over_tls_with_master_tls(pki, zk_path, tmp_path):
    master, register = zk_path
    log, err = tmp_path / "log", tmp_path / "stderr"
    context = server_context(pki.cert, pki.key)
    with BackgroundSim(SimConfig(agents=1), time_scale=20, ssl_context=context) as sim:
        register(sim.address)
        line = refused(tmp_path, "--master", master)  # the leader serves TLS only
        assert f"the master at {sim.address} answers TLS only" in line, line
        run = start_run(
            *("--log", str(log), "--api", "off", "--instances", "1"),
            *("--master", master, "--master-tls", "--ca-file", str(pki.ca)),
            stderr=err,
        )
        try:
            _until(lambda: one_running(sim.url, pki.ca), 45, "the task RUNNING", run, err)
        finally:
            run.send_signal(signal.SIGTERM)
            code = run.wait(30)
    assert code == 0, err.read_text()
    assert master in err.read_text().splitlines()[0]


def test_a_redirect_to_the_leading_master_keeps_tls(pki, tmp_path):
    """A master that is not the leader answers SUBSCRIBE with 307 and the leader's address
    (Mesos's Location has no scheme: //HOST:PORT/...): the leader is reached over TLS too,
    the stream and the calls (the job runs there)."""
    import http.server

    log, err = tmp_path / "log", tmp_path / "stderr"
    context = server_context(pki.cert, pki.key)
    with BackgroundSim(SimConfig(agents=1), time_scale=20, ssl_context=context) as leader:

        class NotLeading(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802  (the start-up probe's GET /version)
                self._answer(200, b'{"version": "1.11.0"}')

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                self._answer(307, b"", {"Location": f"//{leader.address}/api/v1/scheduler"})

            def _answer(self, status: int, body: bytes, headers: dict | None = None) -> None:
                self.send_response(status)
                for name, value in {**(headers or {}), "Content-Length": len(body)}.items():
                    self.send_header(name, str(value))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotLeading)
        other.socket = context.wrap_socket(other.socket, server_side=True)
        threading.Thread(target=other.serve_forever, daemon=True).start()
        try:
            run = start_run(
                *("--log", str(log), "--api", "off", "--instances", "1"),
                *("--master", f"https://127.0.0.1:{other.server_address[1]}"),
                *("--ca-file", str(pki.ca)),
                stderr=err,
            )
            try:
                running = lambda: one_running(leader.url, pki.ca)  # noqa: E731
                _until(running, 45, "the task RUNNING on the leader", run, err)
                acked = lambda: _https_json(f"{leader.url}/state", pki.ca)["acknowledged"]  # noqa: E731
                _until(acked, 15, "its updates acknowledged", run, err)
            finally:
                run.send_signal(signal.SIGTERM)
                code = run.wait(30)
        finally:
            other.shutdown()
            other.server_close()
    assert code == 0, err.read_text()
