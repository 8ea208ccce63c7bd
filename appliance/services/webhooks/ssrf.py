"""Outbound HTTP to URLs that users typed (webhook endpoints), without letting them aim the
appliance at itself, its LAN or the cloud metadata service.

`check_url` allows http(s) only, resolves the host and refuses it unless every address is
a public one. IPv4 hidden inside IPv6 (mapped, NAT64, 6to4, IPv4-compatible) is unwrapped
first, because `ipaddress` calls 64:ff9b::7f00:1 global although it reaches 127.0.0.1.
With `allow_private` (an operator's setting) RFC 1918, CGNAT and IPv6 ULA targets pass;
loopback, link-local, metadata, multicast and unspecified addresses never do.

`post` connects to the address that was checked rather than resolving the name again, so
a DNS answer that changes between check and connect (rebinding) cannot slip through; the
Host header, SNI and certificate check still use the name. It never follows redirects,
holds the whole exchange to one deadline and reads only an excerpt of the answer.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from appliance.errors import InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_PORT = 65535

_METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean
    "fd00:ec2::254",  # AWS over IPv6
    "100.100.100.200",  # Alibaba Cloud
    "192.0.0.192",  # Oracle Cloud
    "168.63.129.16",  # Azure wire server
))

_LAN = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7",
))

_NEVER = (
    ("is_unspecified", "an unspecified address"),
    ("is_loopback", "a loopback address"),
    ("is_link_local", "a link-local address"),
    ("is_multicast", "a multicast address"),
)

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class UnsafeURL(InvalidRequest):
    """A URL the appliance will not send to; the message says why."""

    code = "unsafe_url"
    message = "This URL is not allowed."

    def __init__(self, message: str, *, field: str = "url") -> None:
        super().__init__(message, field=field)


class DeliveryError(Exception):
    """The request was allowed but failed on the network: refused, reset, TLS, timeout."""


@dataclass(frozen=True)
class Target:
    """A checked URL: its parts, the host in ASCII form, and every address it resolved to
    (all allowed; `post` connects to the first)."""

    url: str
    scheme: str
    host: str
    port: int
    path_with_query: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class Response:
    """What an endpoint answered: header names lower-cased, at most `max_excerpt` bytes of
    the body decoded as UTF-8 (bad bytes replaced), and the milliseconds the call took,
    name resolution included."""

    status: int
    headers: dict[str, str]
    body_excerpt: str
    duration_ms: int


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (A and AAAA); OSError when it does not resolve."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _is_public(address: IPAddress) -> bool:
    site_local = isinstance(address, ipaddress.IPv6Address) and address.is_site_local
    return address.is_global and not (address.is_reserved or address.is_private or site_local)


def _refusal(address: IPAddress, allow_private: bool) -> str | None:
    """Why the appliance must not connect to `address`, or None when it may."""
    address = _embedded_ipv4(address) or address
    if address in _METADATA:
        return "a cloud metadata address"
    for attribute, reason in _NEVER:
        if getattr(address, attribute):
            return reason
    if _is_public(address) or (allow_private and any(address in net for net in _LAN)):
        return None
    return "not a public address"


def _parse_address(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError as exc:
        raise UnsafeURL(f"{text} is not an IP address") from exc


def _check_addresses(host: str, addresses: list[str], allow_private: bool) -> None:
    for text in addresses:
        reason = _refusal(_parse_address(text), allow_private)
        if reason:
            shown = host if host == text else f"{host} resolves to {text}, which"
            raise UnsafeURL(f"{shown} is {reason}")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _resolved(host: str, port: int) -> list[str]:
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise UnsafeURL(f"could not resolve {host}") from exc
    if not addresses:
        raise UnsafeURL(f"could not resolve {host}")
    return addresses


def _ascii_host(host: str) -> str:
    if _is_ip(host):
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise UnsafeURL(f"{host} is not a valid host name") from exc


def _split(url: str) -> tuple[str, str, int, str]:
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
        raise UnsafeURL("the URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeURL(f"the URL is malformed: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UnsafeURL("only http and https URLs are allowed")
    if "@" in parts.netloc:
        raise UnsafeURL("the URL must not contain a user name or password")
    if not parts.hostname:
        raise UnsafeURL("the URL has no host")
    if port is None:
        port = DEFAULT_PORTS[scheme]
    if not 1 <= port <= MAX_PORT:
        raise UnsafeURL(f"the URL's port is not between 1 and {MAX_PORT}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, _ascii_host(parts.hostname), port, path


def check_url(url: str, *, allow_private: bool) -> Target:
    """The parsed, resolved and checked destination of `url`.

    Raises UnsafeURL (a 400 `unsafe_url` if it reaches a client) when the scheme is not
    http(s), the URL has user info, no host or a bad port, the host does not resolve, or
    any address it resolves to is not allowed.
    """
    scheme, host, port, path = _split(url)
    addresses = [host] if _is_ip(host) else _resolved(host, port)
    _check_addresses(host, addresses, allow_private)
    return Target(url, scheme, host, port, path, tuple(addresses))


class _Watchdog:
    """Shuts the connection's socket down when the deadline passes, whatever the exchange
    is doing then: a socket timeout alone restarts with every byte a slow server drips."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()

    def remaining(self) -> float:
        return max(self.deadline - time.monotonic(), 0.001)

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._sock is not None:
                _shut(self._sock)


def _shut(sock: socket.socket) -> None:
    # socket.socket's own shutdown: SSLSocket's would drop its TLS state under the thread
    # still reading from it.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _tls_context() -> ssl.SSLContext:
    """Certificates checked against the system's CAs and the URL's host name."""
    return ssl.create_default_context()


def _pinned_socket(target: Target, watchdog: _Watchdog) -> socket.socket:
    sock = socket.create_connection((target.addresses[0], target.port), watchdog.remaining())
    watchdog.attach(sock)
    return sock


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to the checked address, with the Host header of the URL's name."""

    def __init__(self, target: Target, watchdog: _Watchdog) -> None:
        super().__init__(target.host, target.port, timeout=watchdog.remaining())
        self._target = target
        self._watchdog = watchdog

    def connect(self) -> None:
        self.sock = _pinned_socket(self._target, self._watchdog)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to the checked address; SNI and the certificate check use the URL's name."""

    def __init__(self, target: Target, watchdog: _Watchdog) -> None:
        self._tls = _tls_context()
        super().__init__(target.host, target.port, timeout=watchdog.remaining(),
                         context=self._tls)
        self._target = target
        self._watchdog = watchdog

    def connect(self) -> None:
        sock = self._tls.wrap_socket(_pinned_socket(self._target, self._watchdog),
                                     server_hostname=self.host,
                                     do_handshake_on_connect=False)
        self._watchdog.attach(sock)
        self.sock = sock
        sock.do_handshake()


def _describe(exc: Exception, target: Target, timeout: float) -> str:
    where = f"{target.host} ({target.addresses[0]}:{target.port})"
    if isinstance(exc, TimeoutError):
        return f"{where} did not answer within {timeout:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return f"{where} refused the connection"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"{where} has a certificate that does not verify: {exc.verify_message}"
    return f"{where}: {exc.__class__.__name__}: {exc}"


def _response_headers(response: http.client.HTTPResponse) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name, value in response.getheaders():
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged


def _exchange(
    target: Target, body: bytes, headers: Mapping[str, str], watchdog: _Watchdog,
    max_excerpt: int,
) -> tuple[int, dict[str, str], bytes]:
    connection_class = (_PinnedHTTPSConnection if target.scheme == "https"
                        else _PinnedHTTPConnection)
    connection = connection_class(target, watchdog)
    try:
        sent = {name: value for name, value in headers.items() if name.lower() != "host"}
        connection.request("POST", target.path_with_query, body=body, headers=sent)
        response = connection.getresponse()
        return response.status, _response_headers(response), response.read(max_excerpt)
    finally:
        connection.close()


def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float = 15.0,
    allow_private: bool,
    max_excerpt: int = 2048,
) -> Response:
    """POST `body` to `url` once and return the answer, whatever its status.

    The URL is checked as by `check_url` (UnsafeURL) and the connection goes to the first
    checked address. Connecting, sending and reading the status, headers and at most
    `max_excerpt` bytes of the body share one `timeout`; the rest of the body is not
    read. A 3xx is returned, not followed. Any network failure, TLS failure or timeout
    raises DeliveryError.
    """
    started = time.monotonic()
    target = check_url(url, allow_private=allow_private)
    with _Watchdog(timeout) as watchdog:
        try:
            status, answer_headers, excerpt = _exchange(target, body, headers, watchdog,
                                                        max_excerpt)
        except (OSError, http.client.HTTPException) as exc:
            reason = TimeoutError() if watchdog.expired else exc
            raise DeliveryError(_describe(reason, target, timeout)) from exc
        if watchdog.expired:
            raise DeliveryError(_describe(TimeoutError(), target, timeout))
    return Response(
        status=status,
        headers=answer_headers,
        body_excerpt=excerpt.decode("utf-8", errors="replace"),
        duration_ms=round((time.monotonic() - started) * 1000),
    )
