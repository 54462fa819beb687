"""pymesos installs on Python 3.11 with the compiled http-parser (tools/build_http_parser.sh)."""

import importlib.machinery


def test_pymesos_imports_with_compiled_parser():
    import http_parser.parser as compiled
    import pymesos

    assert hasattr(pymesos, "MesosSchedulerDriver")
    # The C extension, not the pure-Python fallback that http-parser silently uses when
    # the build failed.
    assert compiled.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def test_compiled_parser_reads_a_chunked_recordio_stream():
    from http_parser.parser import HttpParser

    record = b'{"type":"HEARTBEAT"}'
    body = b"%d\n%s" % (len(record), record)
    response = (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: application/json\r\n"
        b"Mesos-Stream-Id: 5b1e0c1a-0000-4000-8000-000000000001\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (len(body), body) + b"0\r\n\r\n"
    )
    parser = HttpParser()
    # Feed it in two pieces, as a socket would deliver it.
    half = len(response) // 2
    assert parser.execute(response[:half], half) == half
    assert parser.execute(response[half:], len(response) - half) == len(response) - half
    assert parser.get_status_code() == 200
    assert parser.get_headers()["Mesos-Stream-Id"].startswith("5b1e0c1a")
    assert parser.is_chunked()
    assert parser.is_message_complete()
    assert parser.recv_body() == body
