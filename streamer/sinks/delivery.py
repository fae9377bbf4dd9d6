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

    connections_of(pid)  →  [Connection(remote, port, established, bytes_acked, inode, fd), ...]
    cut(pid, connection)    shuts the connection down under the process's feet

The process is found by its sockets' inodes (/proc/PID/fd); no privilege is needed for either
(the daemon's own child, same user), but sock_diag is an AF_NETLINK socket.

Why `cut`: ffmpeg's own `rw_timeout` ends a read that waits too long (an unanswered handshake),
but not a write to a peer that stopped reading: its socket is blocking, and `send()` waits for
room in the send buffer for ever. Shutting the socket down wakes that `send()` with an error, and
ffmpeg's fifo then reconnects this one target as after any failure. The socket is reached with
pidfd_getfd(2) (Linux 5.6; the daemon may ptrace its own child), then shutdown(2).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import socket
from dataclasses import dataclass

# pyroute2 loads its traffic-control support with any import, and that warns when /proc/net is
# hidden (the unit's ProcSubset=pid): nothing used here needs it.
logging.getLogger("pyroute2.netlink.rtnl.tcmsg").setLevel(logging.ERROR)

from pyroute2 import DiagSocket  # noqa: E402
from pyroute2.netlink.exceptions import NetlinkError  # noqa: E402

log = logging.getLogger(__name__)

TCP_ESTABLISHED = 1
INET_DIAG_INFO = 1 << (2 - 1)  # the extension that carries struct tcp_info
SYS_PIDFD_GETFD = 438  # the same number on every architecture (new system calls share one table)


@dataclass(frozen=True)
class Connection:
    """One TCP connection of the process."""

    remote: str  # the peer's address
    port: int  # the peer's port
    established: bool
    bytes_acked: int  # bytes the peer acknowledged since the connection opened
    inode: int  # tells one connection from the next one to the same peer
    fd: int  # its file descriptor in the process


def socket_fds(pid: int) -> dict[int, int]:
    """Inode → file descriptor of the sockets open in process `pid` (empty if it is gone)."""
    sockets = {}
    try:
        entries = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return sockets
    for entry in entries:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{entry}")
        except OSError:
            continue  # closed meanwhile
        if link.startswith("socket:["):
            sockets[int(link[8:-1])] = int(entry)
    return sockets


def connections_of(pid: int) -> list[Connection]:
    """The TCP connections (IPv4 and IPv6) that process `pid` holds now. OSError if the kernel
    cannot be asked (AF_NETLINK refused by a sandbox, say)."""
    inodes = socket_fds(pid)
    if not inodes:
        return []
    found = []
    try:
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
                                            bytes_acked=int(info.get("tcpi_bytes_acked", 0)), inode=inode,
                                            fd=inodes[inode]))
    except NetlinkError as exc:
        raise OSError(exc.code, f"sock_diag: {exc}") from exc
    return found


_libc = ctypes.CDLL(None, use_errno=True)


def cut(pid: int, connection: Connection) -> None:
    """Shut `connection` of process `pid` down: its blocked reads and writes fail at once.
    OSError if it cannot be reached (EPERM: no ptrace right, or a seccomp filter refusing
    pidfd_getfd; ENOSYS: an older kernel)."""
    if socket_fds(pid).get(connection.inode) != connection.fd:
        return  # already closed by the process (or the descriptor reused): nothing to cut
    pidfd = os.pidfd_open(pid)
    try:
        copy = _libc.syscall(SYS_PIDFD_GETFD, pidfd, connection.fd, 0)
        if copy < 0:
            code = ctypes.get_errno() or errno.EPERM
            raise OSError(code, f"pidfd_getfd: {os.strerror(code)}")
    finally:
        os.close(pidfd)
    with socket.socket(fileno=copy) as sock:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError as exc:
            if exc.errno != errno.ENOTCONN:  # closed meanwhile
                raise
