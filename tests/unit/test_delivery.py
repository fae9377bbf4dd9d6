"""streamer.sinks.delivery on real loopback connections of this process: what the kernel says a
peer acknowledged, and cutting a connection from outside the code that owns it."""

from __future__ import annotations

import os
import socket
import time

import pytest

from streamer.sinks.delivery import connections_of, cut


@pytest.fixture
def connection():
    """(client, server, listener port): a connected loopback pair; the server reads only when told."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    yield client, server, listener.getsockname()[1]
    for sock in (client, server, listener):
        sock.close()


def client_side(port: int):
    [found] = [c for c in connections_of(os.getpid()) if c.port == port]
    return found


def test_bytes_acknowledged_grow_while_the_peer_reads_and_stop_when_it_does_not(connection):
    client, server, port = connection
    start = client_side(port)
    assert start.established and start.remote == "127.0.0.1" and start.fd == client.fileno()
    client.sendall(b"x" * 50_000)
    server.recv(1 << 20)
    assert client_side(port).bytes_acked >= start.bytes_acked + 50_000

    # A peer that stops reading: its kernel acknowledges until its buffer is full, then nothing.
    client.setblocking(False)
    sent = 0
    try:
        while sent < 64 << 20:
            sent += client.send(b"y" * 65536)
    except BlockingIOError:
        pass
    deadline = time.monotonic() + 10
    previous = -1
    while (full := client_side(port).bytes_acked) != previous and time.monotonic() < deadline:
        previous = full  # the peer's kernel still taking what fits in its buffer
        time.sleep(0.5)
    time.sleep(0.5)
    assert client_side(port).bytes_acked == full < start.bytes_acked + 50_000 + sent


def test_a_cut_connection_fails_its_owners_reads_and_writes(connection):
    client, server, port = connection
    cut(os.getpid(), client_side(port))
    assert client.recv(10) == b""  # a read waiting for the peer ends at once
    with pytest.raises(BrokenPipeError):
        client.sendall(b"x" * 10)
    assert [c for c in connections_of(os.getpid()) if c.port == port and c.established] == []


def test_nothing_is_found_for_a_process_that_is_gone():
    assert connections_of(2**22 + 12345) == []
