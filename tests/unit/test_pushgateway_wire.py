"""The Pushgateway wire: grouping paths, credentials, pipelined HTTP/1.1 answers on real sockets."""

from __future__ import annotations

import base64

import pytest

from pricing.observability.wire import Connection, authorization, grouping_path, parse_answer


def test_grouping_path_encodes_values_a_path_cannot_carry():
    assert grouping_path([("job", "pricing-score"), ("instance", "c0ffee")]) == "/metrics/job/pricing-score/instance/c0ffee"
    assert grouping_path([("job", "j"), ("property_id", "a/b")]) == (
        "/metrics/job/j/property_id@base64/" + base64.urlsafe_b64encode(b"a/b").decode()
    )
    assert grouping_path([("job", "j"), ("property_id", "")]) == "/metrics/job/j/property_id@base64/="
    assert grouping_path([("job", "j"), ("property_id", "a b%")]) == "/metrics/job/j/property_id/a%20b%25"


def test_authorization_header_and_url_parts():
    assert authorization("u", "p") == {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}
    assert authorization(bearer_token="t0k") == {"Authorization": "Bearer t0k"}
    assert authorization() == {}
    conn = Connection("https://pg/prefix/", authorization(bearer_token="t0k"))
    assert conn.headers["Authorization"] == "Bearer t0k"
    assert (conn.https, conn.port, conn.prefix) == (True, 443, "/prefix")
    with pytest.raises(ValueError):
        Connection("ftp://pg", {})


def answers_of(data: bytes, eof: bool = False) -> list[tuple[int, bytes, bool]]:
    buf = bytearray(data)
    found = []
    while (parsed := parse_answer(buf, eof)) is not None:
        answer, used = parsed
        del buf[:used]
        found.append(tuple(answer))
    return found


OK = b"HTTP/1.1 200 OK\r\nDate: Thu, 26 Nov 2026 23:37:00 GMT\r\nContent-Length: 0\r\n\r\n"


def test_pipelined_answers_are_taken_in_order_however_the_bytes_arrive():
    refused = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nnope\n"
    stream = OK + refused + OK
    assert answers_of(stream) == [(200, b"", False), (400, b"nope\n", False), (200, b"", False)]
    buf, seen = bytearray(), []
    for byte in stream:  # one byte at a time: an answer is taken only once complete
        buf.append(byte)
        while (parsed := parse_answer(buf, False)) is not None:
            seen.append(parsed[0].status)
            del buf[: parsed[1]]
    assert seen == [200, 400, 200] and not buf


def test_answer_bodies_by_length_by_chunks_or_to_the_end_and_the_closing_ones():
    chunked = b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbad \r\n6;x=1\r\nthings\r\n0\r\n\r\n"
    assert answers_of(chunked + OK) == [(500, b"bad things", False), (200, b"", False)]
    assert answers_of(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)[1] == (200, b"", False)
    closing = b"HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    assert answers_of(closing) == [(401, b"", True)]
    unsized = b"HTTP/1.0 200 OK\r\n\r\nall of it"
    assert answers_of(unsized) == []  # runs to the end of the connection...
    assert answers_of(unsized, eof=True) == [(200, b"all of it", True)]  # ...which has come
    with pytest.raises(ValueError):
        answers_of(b"SSH-2.0-OpenSSH\r\n\r\n")


def test_a_real_socket_gets_pipelined_answers_without_blocking_and_notices_the_other_side_closing():
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    received = bytearray()

    def gateway() -> None:  # reads two requests, answers both in one write, then hangs up
        peer, _ = listener.accept()
        with peer:
            while received.count(b"x_total 1\n") < 2:
                received.extend(peer.recv(65536))
            peer.sendall(OK + OK)
            peer.recv(1)  # until the client has read the answers and asks for nothing more

    server = threading.Thread(target=gateway, daemon=True)
    server.start()
    conn = Connection(f"http://127.0.0.1:{port}/gw", authorization("u", "p"))
    try:
        import time as clock_module

        deadline = clock_module.monotonic() + 10
        assert conn.send([("PUT", "/metrics/job/a", b"x_total 1\n"), ("PUT", "/metrics/job/b", b"x_total 1\n")], deadline) is True
        answers = []
        while len(answers) < 2 and clock_module.monotonic() < deadline:
            answers += conn.poll()  # never blocks: empty until the answers are in
        assert [a.status for a in answers] == [200, 200] and conn.unanswered == 0
        head = bytes(received).split(b"\r\n\r\n")[0].decode()
        assert head.startswith("PUT /gw/metrics/job/a HTTP/1.1\r\n")
        assert f"Host: 127.0.0.1:{port}" in head and "Authorization: Basic" in head
        conn.close()
        server.join(10)
        assert not conn.connected
    finally:
        conn.close()
        listener.close()


def test_an_idle_kept_alive_connection_closed_by_the_other_side_is_noticed_before_the_next_push():
    import socket
    import threading
    import time as clock_module

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def gateway() -> None:  # answers one request, then closes the connection
        peer, _ = listener.accept()
        with peer:
            data = b""
            while b"\r\n\r\n" not in data:
                data += peer.recv(65536)
            peer.sendall(OK)

    server = threading.Thread(target=gateway, daemon=True)
    server.start()
    conn = Connection(f"http://127.0.0.1:{port}", {})
    try:
        deadline = clock_module.monotonic() + 10
        conn.send([("PUT", "/metrics/job/a", b"")], deadline)
        assert [a.status for a in conn.poll(wait_until=deadline)] == [200]
        server.join(10)
        while not conn.closed and clock_module.monotonic() < deadline:
            conn.poll()  # nothing in flight: only looks whether the other side is gone
        assert conn.closed
    finally:
        conn.close()
        listener.close()
