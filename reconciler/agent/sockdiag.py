"""Listening TCP sockets from the kernel's sock_diag netlink interface (what `ss -lt` reads).

Reading /proc/net/tcp (as psutil does) makes the kernel walk every bucket of the
connection hash: 4 ms a file on the 2-core test machine with 97 sockets, so 8 ms for each
health probe. A sock_diag dump asks for listening sockets only: 0.06 ms. pyroute2 does
this too, but costs 157 ms to import and 22 MB of memory in the agent for one request.
"""

from __future__ import annotations

import socket
import struct

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
TCP_LISTEN = 10
HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
# inet_diag_req_v2: family, protocol, extensions, pad, states; then inet_diag_sockid (48 bytes).
REQUEST = struct.Struct("=BBBBI48x")
# inet_diag_msg: family, state, timer, retransmits; sockid (source port first, big-endian,
# then destination port, addresses, interface, cookie); expires, rqueue, wqueue, uid, inode.
PORT, PORT_AT = struct.Struct(">H"), 4
INODE, INODE_AT = struct.Struct("=I"), 4 + 48 + 16
TIMEOUT_S = 1.0


def listening_sockets() -> dict[int, int]:
    """Socket inode -> port of each listening TCP socket (IPv4 and IPv6) in this network
    namespace. Raises OSError where the kernel offers no sock_diag."""
    if not hasattr(socket, "AF_NETLINK"):  # not Linux
        raise OSError("sock_diag: no netlink sockets on this system")
    found: dict[int, int] = {}
    for family in (socket.AF_INET, socket.AF_INET6):
        found.update(_dump(family))
    return found


def _dump(family: int) -> dict[int, int]:
    request = REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << TCP_LISTEN)
    header = HEADER.pack(HEADER.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
    found: dict[int, int] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as channel:
        channel.settimeout(TIMEOUT_S)
        channel.send(header + request)
        while True:
            data = channel.recv(65536)
            if not data:
                raise OSError("sock_diag: no answer")
            offset = 0
            while offset + HEADER.size <= len(data):
                length, kind = HEADER.unpack_from(data, offset)[:2]
                if length < HEADER.size or offset + length > len(data):
                    raise OSError("sock_diag: a truncated message")
                if kind == NLMSG_DONE:
                    return found
                if kind == NLMSG_ERROR:
                    raise OSError("sock_diag: the kernel refused the request")
                body = offset + HEADER.size
                if kind == SOCK_DIAG_BY_FAMILY and length >= HEADER.size + INODE_AT + INODE.size:
                    found[INODE.unpack_from(data, body + INODE_AT)[0]] = PORT.unpack_from(data, body + PORT_AT)[0]
                offset += (length + 3) & ~3
