"""What `appliance serve` tells systemd (sd_notify(3)), without libsystemd.

The unit `appliance install-service` writes has Type=notify: systemd counts the service
as started when READY=1 arrives (after migrations, with the server listening and the
scheduler running), so `systemctl start` waits for that and reports a failed start;
STOPPING=1 says a stop is under way. A datagram to $NOTIFY_SOCKET is the whole protocol.
NotifyAccess=all, because the single binary's bootloader starts the interpreter as its
child, and the message comes from that child.
"""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send `state` ("READY=1", "STOPPING=1", ...) to systemd; False when not run by
    systemd with Type=notify or when the socket is gone (never raises)."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address or address[0] not in ("/", "@"):
        return False
    if address[0] == "@":  # an abstract socket: a leading NUL byte instead of the @
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True
