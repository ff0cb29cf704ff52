"""Facts about processes and ports: an instance's process tree, its memory, its listeners."""

from __future__ import annotations

import errno
import os
import socket

import psutil

from reconciler.agent.sockdiag import listening_sockets

Children = dict[int, list[int]]  # pid -> the pids of its children


def children_table() -> Children:
    """Every process's children, from one pass over the process table."""
    table: Children = {}
    for process in psutil.process_iter(["ppid"]):
        table.setdefault(process.info["ppid"], []).append(process.pid)
    return table


def tree(pid: int, table: Children | None = None) -> list[psutil.Process]:
    """The process and all its descendants; empty when it is gone.

    ``table`` (from children_table) saves a pass over every process when many trees are read.
    """
    try:
        root = psutil.Process(pid)
        if table is None:
            return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
    found, queue = [root], list(table.get(pid, []))
    while queue:
        child = queue.pop()
        queue.extend(table.get(child, []))
        try:
            found.append(psutil.Process(child))
        except psutil.Error:
            continue
    return found


def tree_rss(processes: list[psutil.Process]) -> int | None:
    total, seen = 0, False
    for process in processes:
        try:
            total += process.memory_info().rss
            seen = True
        except psutil.Error:
            continue
    return total if seen else None


def _listening() -> dict[int, int] | None:
    """Socket inode -> port of each listening TCP socket; None where the kernel has no
    sock_diag (then psutil answers, reading /proc/net/tcp)."""
    try:
        return listening_sockets()
    except OSError:
        return None


def _socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets a process holds open; empty when it is gone or not ours to read."""
    folder = f"/proc/{pid}/fd"
    try:
        names = os.listdir(folder)
    except OSError:
        return set()
    inodes = set()
    for name in names:
        try:
            target = os.readlink(f"{folder}/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def tree_listening(processes: list[psutil.Process]) -> set[int]:
    """TCP ports these processes listen on."""
    listening = _listening()
    if listening is None:
        return _psutil_listening(processes)
    return {listening[i] for process in processes for i in _socket_inodes(process.pid) if i in listening}


def listeners() -> dict[int, set[int | None]]:
    """Every TCP port something listens on here, with the listening pids (None: another user's)."""
    listening = _listening()
    if listening is None:
        return _psutil_listeners()
    owners: dict[int, set[int]] = {}
    for pid in psutil.pids():
        for inode in _socket_inodes(pid) & listening.keys():
            owners.setdefault(inode, set()).add(pid)
    found: dict[int, set[int | None]] = {}
    for inode, port in listening.items():
        found.setdefault(port, set()).update(owners.get(inode) or {None})
    return found


def _psutil_listening(processes: list[psutil.Process]) -> set[int]:
    ports: set[int] = set()
    for process in processes:
        try:
            connections = process.net_connections(kind="tcp")
        except psutil.Error:
            continue
        ports.update(c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN and c.laddr)
    return ports


def _psutil_listeners() -> dict[int, set[int | None]]:
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return {}
    found: dict[int, set[int | None]] = {}
    for connection in connections:
        if connection.status == psutil.CONN_LISTEN and connection.laddr:
            found.setdefault(connection.laddr.port, set()).add(connection.pid)
    return found


def describe(pids: set[int | None]) -> str:
    named = []
    for pid in sorted(p for p in pids if p is not None):
        try:
            named.append(f"pid {pid} ({psutil.Process(pid).name()})")
        except psutil.Error:
            named.append(f"pid {pid}")
    return ", ".join(named) or "a process of another user"


def port_taken(port: int) -> bool:
    """True when another socket holds the port (as a server binding all addresses would find)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As servers do, so a closed instance's TIME_WAIT connections do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def client_connections(processes: list[psutil.Process], port: int) -> int:
    """Open client connections these processes accept on ``port``: those of this agent (its
    health probes) not counted, so a drain waits only for real clients."""
    try:
        own = {(c.laddr.ip, c.laddr.port) for c in psutil.Process().net_connections(kind="tcp") if c.laddr}
    except psutil.Error:
        own = set()
    count = 0
    for process in processes:
        try:
            connections = process.net_connections(kind="tcp")
        except psutil.Error:
            continue
        count += sum(
            1
            for c in connections
            if c.status == psutil.CONN_ESTABLISHED
            and c.laddr
            and c.laddr.port == port
            and c.raddr
            and (c.raddr.ip, c.raddr.port) not in own
        )
    return count
