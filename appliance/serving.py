"""The HTTP server of `appliance serve`: waitress, bounded against clients that hold sockets.

waitress reads every connection on one dispatcher thread (asyncore) and hands complete
requests to THREADS worker threads. Open connections, idle or half-sent, cost no worker
thread, but each one counts against waitress's connection limit, and past it waitress
stops accepting: 101 idle sockets used to stall the appliance (its default limit is 100)
for everyone. So this module:

- sets the limit from `CONNECTION_LIMIT` and raises the process's soft limit of open
  files to fit it (at most to the hard limit; a lower limit is used, with a warning, when
  even that is too low);
- polls with poll(), not select(), which fails on descriptors past 1024;
- closes a connection idle for `CHANNEL_TIMEOUT_SECONDS` (waitress's channel timeout);
- closes a connection whose request line and headers have not all arrived
  `HEADER_TIMEOUT_SECONDS` after their first byte (a slow-loris client sends a byte
  now and then, so it is never idle), checked every second;
- believes `X-Forwarded-*` headers only from `TRUSTED_PROXY` (waitress's own middleware),
  and removes them from every other request.
"""

from __future__ import annotations

import logging
import resource
import time
from typing import Any

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

log = logging.getLogger("appliance")

# Descriptors the process needs besides client sockets: the SQLite pool (the database and
# its WAL per connection, 64 connections at most), the listening socket, waitress's
# trigger pipe, engine, SMTP and webhook connections, logs.
OTHER_FILES = 512

# How often idle and slow connections are looked for (waitress's cleanup_interval): the
# timeouts are therefore kept to within about a second.
CLEANUP_INTERVAL_SECONDS = 1


def fit_open_file_limit(connection_limit: int) -> int:
    """Raise the soft limit of open files to fit `connection_limit` client sockets plus
    `OTHER_FILES`, at most to the hard limit; return the connection limit that fits
    (`connection_limit` itself unless the hard limit is too low, which is logged)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connection_limit + OTHER_FILES
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return connection_limit
    raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if raised > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    if raised >= wanted:
        return connection_limit
    fitting = max(1, raised - OTHER_FILES)
    log.warning("the open-file limit (hard %s) fits %s connections, not CONNECTION_LIMIT=%s; "
                "raise LimitNOFILE (systemd) or `ulimit -Hn`", hard, fitting,
                connection_limit)
    return fitting


class TimedChannel(HTTPChannel):
    """A waitress connection that remembers when the request it is reading began."""

    reading_since = 0.0
    _timed: Any = None

    def received(self, data: bytes) -> bool:
        result = super().received(data)
        if self.request is None:
            self._timed = None
        elif self.request is not self._timed:
            self._timed = self.request
            self.reading_since = time.time()  # waitress's maintenance clock
        return result


class ApplianceServer(TcpWSGIServer):
    """waitress's TCP server, closing connections whose headers take too long."""

    channel_class = TimedChannel

    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        self.header_timeout = header_timeout
        super().__init__(*args, **kwargs)

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # idle connections, after channel_timeout
        cutoff = now - self.header_timeout
        for channel in self.active_channels.values():
            request = getattr(channel, "request", None)
            if (request is not None and not request.headers_finished
                    and not channel.requests and channel.reading_since < cutoff):
                channel.will_close = True


def server_adjustments(settings: dict[str, Any], connection_limit: int) -> Adjustments:
    """waitress's adjustments for these settings (the trusted proxy only when one is set)."""
    proxy: dict[str, Any] = {}
    if settings["TRUSTED_PROXY"]:
        proxy = {"trusted_proxy": settings["TRUSTED_PROXY"],
                 "trusted_proxy_count": settings["TRUSTED_PROXY_COUNT"],
                 "trusted_proxy_headers": set(settings["TRUSTED_PROXY_HEADERS"].split(","))}
    return Adjustments(
        # Each attached web console holds a worker thread for its output stream: they
        # get threads of their own, so ordinary requests keep THREADS.
        host=settings["HOST"], port=settings["PORT"],
        threads=settings["THREADS"] + settings["CONSOLE_SESSIONS_MAX"],
        ident="appliance",
        # waitress keeps reading a connection while its request runs, so a live event
        # stream notices a client that left (and frees its thread) within a second
        # instead of at its next failed write.
        channel_request_lookahead=1,
        connection_limit=connection_limit,
        channel_timeout=settings["CHANNEL_TIMEOUT_SECONDS"],
        cleanup_interval=CLEANUP_INTERVAL_SECONDS,
        asyncore_use_poll=True,
        clear_untrusted_proxy_headers=True,
        **proxy,
    )


def create_server(app: Any, settings: dict[str, Any]) -> TcpWSGIServer | MultiSocketServer:
    """Bind waitress for `app` as the settings say (one server per address HOST resolves
    to, as waitress's own `create_server`); raises OSError when an address cannot be bound."""
    adj = server_adjustments(settings, fit_open_file_limit(settings["CONNECTION_LIMIT"]))
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    socket_map: dict[int, Any] = {}
    servers = [ApplianceServer(app, socket_map, dispatcher=dispatcher, adj=adj,
                               sockinfo=sockinfo,
                               header_timeout=settings["HEADER_TIMEOUT_SECONDS"])
               for sockinfo in adj.listen]
    if len(servers) == 1:
        return servers[0]
    return MultiSocketServer(socket_map, adj,
                             [(server.effective_host, server.effective_port)
                              for server in servers], dispatcher)
