"""What a process's TCP connections have delivered: the kernel's own count of the bytes each peer
acknowledged (`tcp_info.bytes_acked`, read through the sock_diag netlink interface by pyroute2).

Why this and not ffmpeg's own figures: ffmpeg's progress (`time=`, `total_size`) counts what the
encoder produced. With the `tee`/`fifo` muxers that is queued in ffmpeg, then in the socket's send
buffer, and says nothing about the peer. An ingest that accepted the TCP connection and never
answered the RTMP handshake, or one frozen mid-stream, leaves ffmpeg encoding at full speed while
nothing arrives. The send queue alone (`/proc/net/tcp` tx_queue) cannot tell either: a peer that
never reads still has its kernel acknowledge the first kilobytes, so the queue stays empty. Only
the acknowledged byte count growing means the receiver takes the stream; nothing on the far side
(an RTMP statistics page, say) is needed, so it works the same against any ingest.

    connections_of(pid)  →  [Connection(remote, port, established, bytes_acked, inode), ...]

The process is found by its sockets' inodes (/proc/PID/fd); no privilege is needed for either
(the daemon's own child, same user), but sock_diag is an AF_NETLINK socket.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

from pyroute2 import DiagSocket

log = logging.getLogger(__name__)

TCP_ESTABLISHED = 1
INET_DIAG_INFO = 1 << (2 - 1)  # the extension that carries struct tcp_info


@dataclass(frozen=True)
class Connection:
    """One TCP connection of the process."""

    remote: str  # the peer's address
    port: int  # the peer's port
    established: bool
    bytes_acked: int  # bytes the peer acknowledged since the connection opened
    inode: int  # tells one connection from the next one to the same peer


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets open in process `pid` (empty if it is gone)."""
    inodes = set()
    try:
        entries = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for entry in entries:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{entry}")
        except OSError:
            continue  # closed meanwhile
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    return inodes


def connections_of(pid: int) -> list[Connection]:
    """The TCP connections (IPv4 and IPv6) that process `pid` holds now."""
    inodes = socket_inodes(pid)
    if not inodes:
        return []
    found = []
    with DiagSocket() as diag:
        diag.bind()
        for family in (socket.AF_INET, socket.AF_INET6):
            for message in diag.get_sock_stats(family=family, extensions=INET_DIAG_INFO):
                inode = message.get("idiag_inode")
                if inode not in inodes:
                    continue
                info = message.get_attr("INET_DIAG_INFO") or {}
                found.append(Connection(remote=message.get("idiag_dst"), port=message.get("idiag_dport"),
                                        established=message.get("idiag_state") == TCP_ESTABLISHED,
                                        bytes_acked=int(info.get("tcpi_bytes_acked", 0)), inode=inode))
    return found
