"""The sender's transport: calls pipelined over one keep-alive socket (engine/mesos/http1.py),
to the simulated master over real HTTP, and to a raw socket server that answers in the odd
ways HTTP/1.1 allows (chunked, close, no length)."""

from __future__ import annotations

import socket
import threading

import pytest
from sim_session import PA_FRAMEWORK, subscribe_body

from engine.mesos import http1
from engine.mesos.sender import ACKS, CALLS, MasterConnection, ThreadedSender
from tools.sim_master.client import EventStream
from tools.sim_master.cluster import SimConfig
from tools.sim_master.server import BackgroundSim


class Subscribed:
    """What MasterConnection reads from a pymesos driver, for a framework subscribed over a
    raw EventStream (tests/sim_session.py's way)."""

    def __init__(self, address: str) -> None:
        self.master = address
        self.stream = EventStream(address, subscribe_body(PA_FRAMEWORK))
        self.stream_id = self.stream.headers["mesos-stream-id"]
        subscribed = self.stream.next(5)
        self.framework_id = subscribed["subscribed"]["framework_id"]["value"]

    def close(self) -> None:
        self.stream.close()


@pytest.fixture
def master():
    with BackgroundSim(SimConfig(agents=1, seed=5)) as sim:
        driver = Subscribed(sim.address)
        try:
            yield driver
        finally:
            driver.close()


def _ack(n: int) -> tuple[str, dict]:
    return (
        "ACKNOWLEDGE",
        {
            "agent_id": {"value": "nobody"},
            "task_id": {"value": f"t{n}"},
            "uuid": "AAECAwQFBgcICQoLDA0ODw==",  # matches no update: taken and ignored (202)
        },
    )


def test_a_pipelined_batch_is_answered_call_by_call_in_order(master):
    conn = MasterConnection(lambda: master, timeout=10)
    try:
        calls = [_ack(n) for n in range(300)]
        calls[150] = ("NO_SUCH_CALL", {})  # refused (400): only that one fails
        errors = conn.post_many(calls)
        assert [i for i, e in enumerate(errors) if e is not None] == [150]
        assert "400" in str(errors[150])
        # The same connection goes on serving the next batch.
        assert conn.post_many([_ack(1), _ack(2)]) == [None, None]
    finally:
        conn.close()


def test_without_a_subscription_nothing_is_sent(master):
    conn = MasterConnection(lambda: None, timeout=10)
    errors = conn.post_many([_ack(1), ("KILL", {"task_id": {"value": "x"}})])
    assert all(isinstance(e, ConnectionError) for e in errors)
    assert "not subscribed: KILL not sent" in str(errors[1])


def test_while_the_gate_is_not_open_no_call_reaches_the_master(master):
    """A replicated scheduler's gate (engine/gate.py): paused or deposed, the leader's calls
    fail at once, naming why, and the master sees none of them."""
    from sim_session import state

    from engine.gate import Gate

    def suppressed() -> bool:
        return state(master.master)["frameworks"][0]["suppressed"]

    gate = Gate()
    conn = MasterConnection(lambda: master, timeout=10, gate=gate)
    try:
        gate.open()
        gate.close("the ZooKeeper connection is suspended")
        (error,) = conn.post_many([("SUPPRESS", {})])
        assert isinstance(error, ConnectionError)
        assert "not leading (the ZooKeeper connection is suspended): SUPPRESS" in str(error)
        assert not suppressed()
        gate.open()
        assert conn.post_many([("SUPPRESS", {})]) == [None]
        assert suppressed()
        gate.shut_for_good("fenced")
        gate.open()  # shut is for good
        (error,) = conn.post_many([("REVIVE", {})])
        assert "not leading (fenced)" in str(error)
        assert suppressed()
    finally:
        conn.close()


def test_the_threaded_sender_keeps_the_calls_in_order_and_tells_every_call(master):
    told: dict[str, list] = {ACKS: [], CALLS: []}
    done = threading.Event()

    def tell(lane, n):
        def outcome(error):
            told[lane].append((n, error))
            if len(told[ACKS]) + len(told[CALLS]) == 700:
                done.set()

        return outcome

    sender = ThreadedSender(lambda: MasterConnection(lambda: master, timeout=10))
    try:
        for n in range(500):
            sender.send(*_ack(n), tell(ACKS, n))
            if n < 200:
                sender.send("REVIVE", {}, tell(CALLS, n))
        assert done.wait(30)
    finally:
        sender.stop()
    assert sorted(told[ACKS]) == [(n, None) for n in range(500)]  # two connections: any order
    assert told[CALLS] == [(n, None) for n in range(200)]  # one: in order
    assert sender.stats[ACKS].batches < 500  # pipelined: many calls to a write


# -- odd but legal answers, from a raw socket server ---------------------------------------------
class CannedServer:
    """Answers each request it reads with the next canned answer (bytes), then optionally
    closes: real sockets, HTTP/1.1 framing written by hand."""

    def __init__(self, answers: list[bytes], *, close_after: int | None = None) -> None:
        self.answers, self.close_after = answers, close_after
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        buffer = b""
        with conn:
            while self.answers:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                length = int(
                    next(
                        line.split(b":")[1]
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    )
                )
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                buffer = buffer[length:]
                self.requests += 1
                conn.sendall(self.answers.pop(0))
                if self.close_after is not None and self.requests >= self.close_after:
                    return


def _post(n: int) -> bytes:
    return http1.request("127.0.0.1", "/api/v1/scheduler", b'{"n": %d}' % n, {})


def test_chunked_and_sized_answers_and_one_that_runs_to_the_close():
    server = CannedServer(
        [
            b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n",
            b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\nboom",
            b"HTTP/1.0 200 OK\r\n\r\nall of it",
        ]
    )
    conn = http1.Connection("127.0.0.1", server.port, timeout=5)
    answers, broken = conn.exchange([_post(n) for n in range(4)])
    assert broken is None
    assert [(a.status, a.body) for a in answers] == [
        (202, b""),
        (400, b"hello world"),
        (500, b"boom"),
        (200, b"all of it"),
    ]
    assert answers[-1].close


def test_a_connection_closed_mid_batch_fails_the_calls_not_answered():
    server = CannedServer(
        [b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"] * 5, close_after=2
    )
    conn = http1.Connection("127.0.0.1", server.port, timeout=5)
    answers, broken = conn.exchange([_post(n) for n in range(5)])
    assert [a.status for a in answers] == [202, 202]
    assert isinstance(broken, ConnectionError)


def test_an_answer_that_is_not_http_breaks_the_connection():
    server = CannedServer([b"SPDY/3 what\r\n\r\n"])
    conn = http1.Connection("127.0.0.1", server.port, timeout=5)
    answers, broken = conn.exchange([_post(0)])
    assert answers == [] and isinstance(broken, http1.ProtocolError)


def test_the_sender_says_when_an_answer_is_outstanding():
    """While a call's answer has not come, the master is busy with it (the runtime's
    watchdog does not take the stream's silence meanwhile for a dead stream)."""
    release = threading.Event()

    class Slow(CannedServer):
        def _serve(self) -> None:
            release.wait(10)
            super()._serve()

    server = Slow([b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"])

    class Transport:
        def __init__(self) -> None:
            self.conn = http1.Connection("127.0.0.1", server.port, timeout=10)

        def post(self, kind, payload):
            answers, broken = self.conn.exchange([_post(0)])
            if broken is not None:
                raise broken

    done = threading.Event()
    sender = ThreadedSender(Transport)
    try:
        assert not sender.awaiting_master()
        sender.send("RECONCILE", {"tasks": []}, lambda error: done.set())
        wait = threading.Event()
        for _ in range(200):
            if sender.awaiting_master():
                break
            wait.wait(0.01)
        assert sender.awaiting_master()
        release.set()
        assert done.wait(10)
        for _ in range(200):
            if not sender.awaiting_master():
                break
            wait.wait(0.01)
        assert not sender.awaiting_master()
    finally:
        release.set()
        sender.stop()


def test_calls_carry_the_credential_the_master_asks_for():
    """Against a master that authenticates (HTTP basic), a call without the credential is
    refused (401) and with it taken: the sender sends what pymesos sends with its own."""
    from engine.mesos.sender import basic_authorization

    with BackgroundSim(SimConfig(agents=1, seed=5), credentials={"ops": "s3cret"}) as sim:
        header = {"Authorization": basic_authorization("ops", "s3cret")}
        framework = {**PA_FRAMEWORK, "principal": "ops"}  # a framework of that principal
        stream = EventStream(sim.address, subscribe_body(framework), extra_headers=header)
        try:
            driver = Subscribed.__new__(Subscribed)
            driver.master, driver.stream = sim.address, stream
            driver.stream_id = stream.headers["mesos-stream-id"]
            driver.framework_id = stream.next(5)["subscribed"]["framework_id"]["value"]
            bare = MasterConnection(lambda: driver, timeout=10)
            signed = MasterConnection(lambda: driver, timeout=10, credential=("ops", "s3cret"))
            try:
                (refused,) = bare.post_many([_ack(1)])
                assert "401" in str(refused)
                assert signed.post_many([_ack(1), _ack(2)]) == [None, None]
            finally:
                bare.close()
                signed.close()
        finally:
            stream.close()
