"""The outbound URL guard and the pinned one-shot POST.

Name resolution is faked at `ssrf.resolve`; `post` talks to real HTTP(S) servers on
127.0.0.1, reached by letting the guard accept loopback for those tests only.
"""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.services.webhooks import ssrf
from appliance.services.webhooks.ssrf import DeliveryError, UnsafeURL

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"
UNSPECIFIED_V4 = "0.0.0.0"  # noqa: S104 - an address the guard refuses, never bound


class FakeDNS:
    """Answers from a table; a host given several answers gives the next one each time."""

    def __init__(self) -> None:
        self.answers: dict[str, list[list[str]]] = {}
        self.calls: list[str] = []

    def set(self, host: str, *answers: list[str]) -> None:
        self.answers[host] = list(answers)

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        answers = self.answers.get(host)
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers.pop(0) if len(answers) > 1 else answers[0]


@pytest.fixture
def dns(monkeypatch) -> FakeDNS:
    fake = FakeDNS()
    monkeypatch.setattr(ssrf, "resolve", fake)
    return fake


def check(dns: FakeDNS, *addresses: str, allow_private: bool = False) -> ssrf.Target:
    dns.set("hooks.example", list(addresses))
    return ssrf.check_url("https://hooks.example/in", allow_private=allow_private)


# The guard.

@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "::1", "169.254.169.254", "10.0.0.1", "172.16.0.1",
    "192.168.1.5", "100.64.0.1", "fc00::1", "fd12:3456::1",
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a00:1::",  # 6to4 of 10.0.0.1
    "::ffff:127.0.0.1", "::ffff:169.254.169.254",
    "::7f00:1",  # IPv4-compatible 127.0.0.1
    UNSPECIFIED_V4, "::", "224.0.0.1", "ff02::1", "fe80::1", "169.254.1.1",
    "255.255.255.255", "240.0.0.1", "192.0.2.1", "2001:db8::1", "fec0::1",
    "2001::1",  # Teredo
    "fd00:ec2::254", "100.100.100.200", "192.0.0.192",
])
def test_it_refuses_a_host_resolving_to_a_non_public_address(dns, address):
    with pytest.raises(UnsafeURL, match=f"hooks.example resolves to {address}, which is"):
        check(dns, address)


@pytest.mark.parametrize(("address", "reason"), [
    ("127.0.0.1", "loopback"),
    ("64:ff9b::7f00:1", "loopback"),
    ("2002:7f00:1::", "loopback"),
    ("::ffff:127.0.0.1", "loopback"),
    ("169.254.169.254", "cloud metadata"),
    ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"),
    (UNSPECIFIED_V4, "unspecified"),
    ("10.0.0.1", "not a public address"),
])
def test_the_refusal_says_why(dns, address, reason):
    with pytest.raises(UnsafeURL, match=reason):
        check(dns, address)


@pytest.mark.parametrize("address", [
    "10.0.0.1", "192.168.1.5", "172.16.0.1", "172.31.255.254", "100.64.0.1", "fd12:3456::1",
    "::ffff:10.0.0.1", "64:ff9b::c0a8:105",
])
def test_private_lan_addresses_pass_when_the_operator_allows_them(dns, address):
    assert check(dns, address, allow_private=True).addresses == (address,)


@pytest.mark.parametrize("address", [
    "127.0.0.1", "::1", "169.254.169.254", "fe80::1", UNSPECIFIED_V4, "224.0.0.1",
    "64:ff9b::7f00:1", "fd00:ec2::254", "100.100.100.200", "192.0.2.1",
])
def test_allowing_private_targets_never_allows_loopback_link_local_or_metadata(dns, address):
    with pytest.raises(UnsafeURL):
        check(dns, address, allow_private=True)


def test_one_unsafe_address_among_public_ones_refuses_the_host(dns):
    with pytest.raises(UnsafeURL, match="127.0.0.1"):
        check(dns, PUBLIC_V4, "127.0.0.1")


def test_a_public_host_is_accepted(dns):
    dns.set("hooks.example", [PUBLIC_V4, PUBLIC_V6])
    target = ssrf.check_url("https://Hooks.Example/in/bound?x=1&y=2#frag", allow_private=False)
    assert target == ssrf.Target(
        url="https://Hooks.Example/in/bound?x=1&y=2#frag", scheme="https",
        host="hooks.example", port=443, path_with_query="/in/bound?x=1&y=2",
        addresses=(PUBLIC_V4, PUBLIC_V6))


def test_a_public_address_wrapped_in_nat64_or_6to4_is_accepted(dns):
    assert check(dns, "64:ff9b::5db8:d822", "2002:5db8:d822::1").addresses


def test_ports_and_paths_default_sensibly(dns):
    dns.set("hooks.example", [PUBLIC_V4])
    plain = ssrf.check_url("http://hooks.example", allow_private=False)
    assert (plain.scheme, plain.port, plain.path_with_query) == ("http", 80, "/")
    custom = ssrf.check_url("HTTPS://hooks.example:8443/x", allow_private=False)
    assert (custom.scheme, custom.port) == ("https", 8443)


def test_a_literal_public_address_needs_no_resolution(dns):
    assert ssrf.check_url(f"http://{PUBLIC_V4}/", allow_private=False).addresses == (PUBLIC_V4,)
    assert ssrf.check_url(f"http://[{PUBLIC_V6}]:8080/", allow_private=False).port == 8080
    assert dns.calls == []


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/", "http://[::1]/", "http://[::ffff:7f00:1]/",
    "http://169.254.169.254/latest/meta-data/", "http://[64:ff9b::7f00:1]/", "http://0.0.0.0/",
    "http://[fe80::1%25eth0]/",
])
def test_a_literal_unsafe_address_is_refused(dns, url):
    with pytest.raises(UnsafeURL, match="is (a|an|not)"):
        ssrf.check_url(url, allow_private=True)


@pytest.mark.parametrize(("url", "reason"), [
    ("ftp://hooks.example/", "only http and https"),
    ("file:///etc/passwd", "only http and https"),
    ("gopher://hooks.example:25/", "only http and https"),
    ("javascript:alert(1)", "only http and https"),
    ("hooks.example/in", "only http and https"),
    ("", "only http and https"),
    ("http://user:pass@hooks.example/", "user name or password"),
    ("http://user@hooks.example/", "user name or password"),
    ("http://127.0.0.1\\@hooks.example/", "user name or password"),
    ("http:///in", "no host"),
    ("https://:443/in", "no host"),
    ("http://hooks.example:0/", "(?i)port"),
    ("http://hooks.example:65536/", "(?i)port"),
    ("http://hooks.example:http/", "(?i)port"),
    ("http://[::1/", "malformed"),
    ("http://hooks.example/a b", "spaces or control"),
    ("http://hooks.example/\r\nX-Injected: 1", "spaces or control"),
    ("http://a..b/", "not a valid host name"),
])
def test_it_refuses_a_malformed_or_unsupported_url(dns, url, reason):
    dns.set("hooks.example", [PUBLIC_V4])
    with pytest.raises(UnsafeURL, match=reason):
        ssrf.check_url(url, allow_private=False)


def test_an_unresolvable_host_is_refused(dns):
    with pytest.raises(UnsafeURL, match="could not resolve nowhere.example"):
        ssrf.check_url("https://nowhere.example/", allow_private=False)


def test_an_international_host_name_is_resolved_in_its_ascii_form(dns):
    dns.set("xn--bcher-kva.example", [PUBLIC_V4])
    assert ssrf.check_url("https://bücher.example/", allow_private=False).host == \
        "xn--bcher-kva.example"


def test_an_unsafe_url_is_a_client_error_about_the_url(dns):
    with pytest.raises(UnsafeURL) as refused:
        check(dns, "127.0.0.1")
    assert (refused.value.status, refused.value.code) == (400, "unsafe_url")
    assert refused.value.details == {"field": "url"}


def test_the_real_resolver_returns_address_strings():
    assert "127.0.0.1" in ssrf.resolve("127.0.0.1", 80)


# post() against real local servers.

@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Routes:
    """What the test server does, and what it was asked."""

    seen: list[Seen] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def do_POST(self):
        routes: Routes = self.server.routes
        length = int(self.headers.get("Content-Length", "0"))
        routes.seen.append(Seen(self.path, dict(self.headers), self.rfile.read(length)))
        getattr(self, "route_" + self.path.strip("/").split("?")[0] or "hook")()

    def answer(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def route_hook(self):
        self.answer(200, b"received", Content_Type="text/plain", X_Custom="yes")

    def route_gone(self):
        self.answer(410, b"gone")

    def route_redirect(self):
        host, port = self.server.server_address[:2]
        self.answer(302, b"", Location=f"http://{host}:{port}/target")

    def route_target(self):
        self.answer(200, b"should never be reached")

    def route_slow(self):
        self.server.routes.stop.wait(10)
        self.answer(200, b"too late")

    def route_drip(self):
        for byte in b"HTTP/1.1 200 OK\r\n" + b"X-Padding: " + b"x" * 500 + b"\r\n\r\n":
            if self.server.routes.stop.wait(0.05):
                return
            self.wfile.write(bytes([byte]))
            self.wfile.flush()

    def route_huge(self):
        self.send_response(200)
        self.send_header("Content-Length", str(10_000_000))
        self.end_headers()
        for _ in range(1000):
            self.wfile.write(b"y" * 10_000)

    def route_binary(self):
        self.answer(200, b"\xff\xfeok")


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass


def serve(tls: ssl.SSLContext | None = None):
    server = QuietServer(("127.0.0.1", 0), Handler)
    server.routes = Routes()
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    return server


def stop(server) -> None:
    server.routes.stop.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def loopback_allowed(monkeypatch):
    """The guard accepts 127.0.0.0/8 so that tests can reach their own server."""
    strict = ssrf._refusal

    def allowing_loopback(address, allow_private):
        return None if address.is_loopback else strict(address, allow_private)

    monkeypatch.setattr(ssrf, "_refusal", allowing_loopback)


@pytest.fixture
def server(dns, loopback_allowed):
    server = serve()
    dns.set("hooks.example", ["127.0.0.1"])
    yield server
    stop(server)


def url(server, path: str = "/hook", host: str = "hooks.example", scheme: str = "http") -> str:
    return f"{scheme}://{host}:{server.server_address[1]}{path}"


def test_the_request_arrives_with_the_urls_host_and_the_body(server):
    headers = {"webhook-id": "msg_1", "Content-Type": "application/json", "Host": "evil"}
    response = ssrf.post(url(server, "/hook?x=1"), b'{"a": 1}', headers, allow_private=False)
    assert response.status == 200
    assert response.body_excerpt == "received"
    assert response.headers["content-type"] == "text/plain"
    assert response.headers["x-custom"] == "yes"
    assert response.duration_ms >= 0
    [seen] = server.routes.seen
    assert seen.path == "/hook?x=1"
    assert seen.headers["Host"] == f"hooks.example:{server.server_address[1]}"
    assert seen.headers["webhook-id"] == "msg_1"
    assert seen.body == b'{"a": 1}'


def test_any_status_is_returned_rather_than_raised(server):
    assert ssrf.post(url(server, "/gone"), b"{}", {}, allow_private=False).status == 410


def test_a_redirect_is_returned_and_not_followed(server):
    response = ssrf.post(url(server, "/redirect"), b"{}", {}, allow_private=False)
    assert response.status == 302
    assert response.headers["location"].endswith("/target")
    assert [seen.path for seen in server.routes.seen] == ["/redirect"]


def test_a_server_slower_than_the_timeout_is_a_delivery_error(server):
    started = time.monotonic()
    with pytest.raises(DeliveryError, match="did not answer within 0.5 s"):
        ssrf.post(url(server, "/slow"), b"{}", {}, timeout=0.5, allow_private=False)
    assert time.monotonic() - started < 1.5


def test_a_server_dripping_its_answer_is_cut_off_at_the_deadline(server):
    started = time.monotonic()
    with pytest.raises(DeliveryError, match="did not answer within 0.5 s"):
        ssrf.post(url(server, "/drip"), b"{}", {}, timeout=0.5, allow_private=False)
    assert time.monotonic() - started < 1.5


def test_a_huge_answer_is_cut_to_the_excerpt(server):
    started = time.monotonic()
    response = ssrf.post(url(server, "/huge"), b"{}", {}, max_excerpt=100, allow_private=False)
    assert response.body_excerpt == "y" * 100
    assert time.monotonic() - started < 5


def test_an_answer_that_is_not_utf8_is_replaced_not_raised(server):
    response = ssrf.post(url(server, "/binary"), b"{}", {}, allow_private=False)
    assert response.body_excerpt == "\ufffd\ufffdok"


def test_a_refused_connection_is_a_delivery_error(dns, loopback_allowed):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dns.set("hooks.example", ["127.0.0.1"])
    with pytest.raises(DeliveryError, match="refused the connection"):
        ssrf.post(f"http://hooks.example:{port}/", b"{}", {}, allow_private=False)


def test_it_connects_to_the_checked_address_without_resolving_again(server, dns, monkeypatch):
    dns.set("hooks.example", ["127.0.0.1"], ["203.0.113.7"])
    real_getaddrinfo = socket.getaddrinfo

    def literal_addresses_only(host, *args, **kwargs):
        ipaddress.ip_address(host)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", literal_addresses_only)
    response = ssrf.post(url(server), b"{}", {}, allow_private=False)
    assert response.status == 200
    assert dns.calls == ["hooks.example"]
    assert dns("hooks.example", 80) == ["203.0.113.7"]


def test_an_unsafe_url_is_refused_before_any_connection(dns):
    dns.set("hooks.example", ["127.0.0.1"])
    with pytest.raises(UnsafeURL):
        ssrf.post("http://hooks.example/", b"{}", {}, allow_private=True)


# HTTPS: the connection goes to the checked address, SNI and the certificate use the name.

@dataclass
class Certificates:
    ca: Path
    leaf: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject, issuer, public_key, signing_key, *, ca: bool, names=()):
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(subject).issuer_name(issuer).public_key(public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(hours=1))
               .not_valid_after(now + dt.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(
                   digital_signature=not ca, key_cert_sign=ca, crl_sign=ca,
                   content_commitment=False, key_encipherment=False, data_encipherment=False,
                   key_agreement=False, encipher_only=False, decipher_only=False),
                   critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                              critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   signing_key.public_key()), critical=False))
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Certificates:
    folder = tmp_path_factory.mktemp("tls")
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    ca = _certificate(_name("Test CA"), _name("Test CA"), ca_key.public_key(), ca_key, ca=True)
    leaf = _certificate(_name("hooks.example"), _name("Test CA"), leaf_key.public_key(),
                        ca_key, ca=False, names=["hooks.example"])
    paths = Certificates(folder / "ca.pem", folder / "leaf.pem", folder / "key.pem")
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.leaf.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return paths


@pytest.fixture
def tls_server(certificates, dns, loopback_allowed):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates.leaf, certificates.key)
    server_names: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: server_names.append(name)
    server = serve(context)
    server.server_names = server_names
    dns.set("hooks.example", ["127.0.0.1"])
    dns.set("other.example", ["127.0.0.1"])
    yield server
    stop(server)


@pytest.fixture
def trusting_the_test_ca(monkeypatch, certificates):
    monkeypatch.setattr(ssrf, "_tls_context",
                        lambda: ssl.create_default_context(cafile=str(certificates.ca)))


def test_https_goes_to_the_checked_address_with_the_names_sni(tls_server, trusting_the_test_ca):
    response = ssrf.post(url(tls_server, scheme="https"), b"{}", {}, allow_private=False)
    assert response.status == 200
    assert tls_server.server_names == ["hooks.example"]
    [seen] = tls_server.routes.seen
    assert seen.headers["Host"] == f"hooks.example:{tls_server.server_address[1]}"


def test_https_refuses_a_certificate_for_another_name(tls_server, trusting_the_test_ca):
    with pytest.raises(DeliveryError, match="certificate that does not verify"):
        ssrf.post(url(tls_server, host="other.example", scheme="https"), b"{}", {},
                  allow_private=False)
    assert tls_server.routes.seen == []


def test_https_refuses_a_certificate_from_an_unknown_authority(tls_server):
    with pytest.raises(DeliveryError, match="certificate that does not verify"):
        ssrf.post(url(tls_server, scheme="https"), b"{}", {}, allow_private=False)
    assert tls_server.routes.seen == []
