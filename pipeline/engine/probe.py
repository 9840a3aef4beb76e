"""A quick TCP reachability check, so a wrong cluster address fails in seconds, not minutes."""

from __future__ import annotations

import socket

__all__ = ["tcp_reachable", "split_address"]


def split_address(address: str) -> tuple[str, int] | None:
    """``"tcp://host:port"``, ``"ray://host:port"`` or ``"host:port"`` to ``(host, port)``; None if not of that form."""
    rest = address.split("://", 1)[-1]
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def tcp_reachable(host: str, port: int, timeout_s: float = 5.0) -> bool:
    """True when something accepts TCP connections at ``host:port`` within ``timeout_s``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False
