"""HTTP over a unix socket for `requests`: how the drivers reach a local engine's API.

Engines listen on a unix socket (`/var/lib/incus/unix.socket`, `/var/run/docker.sock`).
`unix_session(path)` returns a `requests.Session` whose every `http://` request goes to
that socket, whatever host the URL names; timeouts, pooling and errors are requests'
own, so a driver handles one family of exceptions for the socket and for HTTPS.
"""

from __future__ import annotations

import socket
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import NewConnectionError


def _pool_class(socket_path: str) -> type[HTTPConnectionPool]:
    class UnixConnection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            # urllib3 passes a number, None or its "default" sentinel (leave the default)
            if self.timeout is None or isinstance(self.timeout, int | float):
                sock.settimeout(self.timeout)
            try:
                sock.connect(socket_path)
            except OSError as exc:
                sock.close()
                raise NewConnectionError(self, f"cannot connect to {socket_path}: {exc}") from exc
            return sock

    class UnixConnectionPool(HTTPConnectionPool):
        ConnectionCls = UnixConnection

    return UnixConnectionPool


class UnixSocketAdapter(HTTPAdapter):
    """Sends the requests of the URLs it is mounted on to one unix socket."""

    def __init__(self, socket_path: str, **kwargs: Any) -> None:
        self.socket_path = socket_path
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _pool_class(self.socket_path)}


def unix_session(socket_path: str) -> requests.Session:
    """A session whose `http://` URLs all reach `socket_path` (no proxies from the env)."""
    session = requests.Session()
    session.trust_env = False  # an HTTP_PROXY in the environment must not catch the socket
    session.mount("http://", UnixSocketAdapter(socket_path))
    return session
