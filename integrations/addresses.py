"""Network addresses: which host names keep a listener on this machine.

A module of its own, importing nothing heavy, so the agent's settings can check a listen address
without loading the HL7 stack.
"""

from __future__ import annotations

import ipaddress

LOOPBACK_NAMES = frozenset({"localhost"})


def is_loopback_host(host: str | None) -> bool:
    """Whether ``host`` only listens on this machine: 127.0.0.0/8, ::1 or ``localhost`` (not "" = all)."""
    if not host:
        return False
    if host.lower().rstrip(".") in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere
