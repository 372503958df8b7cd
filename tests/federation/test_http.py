"""The outbound client against real servers on loopback (https via trustme)."""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trustme
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from microfedi.config import ConfigError, Settings
from microfedi.federation.http import FederationClient, FetchError, Signer, non_public_kind
from microfedi.federation.signatures import SignatureError, parse_signed_request, verify_signed_request

if TYPE_CHECKING:
    from tests.federation.conftest import RunningServer, SilentServer

KEY_ID = "https://me.test/actor#main-key"
FIVE_MIB = 5 << 20


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def signer(rsa_key: rsa.RSAPrivateKey) -> Signer:
    return Signer(KEY_ID, rsa_key)


# --- a remote server that records what it is sent ---------------------------


@dataclass
class Received:
    method: str
    target: str  # raw path plus "?query", as sent
    headers: list[tuple[str, str]]
    body: bytearray = field(default_factory=bytearray)

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name.lower()), None)


def recording(app: ASGIApp, log: list[Received]) -> ASGIApp:
    """Wrap ``app`` so every HTTP request it gets (with its body) lands in ``log``."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        query = scope["query_string"].decode()
        target = scope["raw_path"].decode() + (f"?{query}" if query else "")
        entry = Received(scope["method"], target, [(k.decode(), v.decode()) for k, v in scope["headers"]])
        log.append(entry)

        async def receive_and_keep() -> Any:
            message = await receive()
            entry.body += message.get("body", b"")
            return message

        await app(scope, receive_and_keep, send)

    return wrapped


def remote_app(name: str, log: list[Received]) -> ASGIApp:
    """A fediverse server named ``name`` with the behaviours the tests need."""

    async def actor(request: Request) -> Response:
        return JSONResponse({"id": f"https://{name}/actor", "type": "Person"}, media_type="application/activity+json")

    async def inbox(request: Request) -> Response:
        await request.body()
        return Response(status_code=202)

    async def redirect(request: Request) -> Response:
        code = int(request.query_params.get("code", "302"))
        return RedirectResponse(request.query_params["to"], status_code=code)

    async def loop(request: Request) -> Response:
        return RedirectResponse("/loop", status_code=302)

    async def status(request: Request) -> Response:
        retry_after = request.query_params.get("retry_after")
        headers = {"Retry-After": retry_after} if retry_after else {}
        return Response(status_code=int(request.path_params["code"]), headers=headers)

    async def big(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"pad": "'
            for _ in range(FIVE_MIB // (64 << 10)):
                yield b"x" * (64 << 10)
            yield b'"}'

        # No Content-Length: the client has to count while it streams.
        return StreamingResponse(chunks(), media_type="application/activity+json")

    async def declared_big(request: Request) -> Response:
        async def never() -> AsyncIterator[bytes]:
            await asyncio.sleep(30)
            yield b""

        return StreamingResponse(
            never(), media_type="application/activity+json", headers={"Content-Length": str(FIVE_MIB)}
        )

    async def trickle(request: Request) -> Response:
        async def spaces() -> AsyncIterator[bytes]:
            while True:
                yield b" "
                await asyncio.sleep(0.1)

        return StreamingResponse(spaces(), media_type="application/activity+json")

    async def html(request: Request) -> Response:
        return HTMLResponse("<p>not an actor</p>")

    async def array(request: Request) -> Response:
        return JSONResponse([1, 2, 3], media_type="application/activity+json")

    async def broken(request: Request) -> Response:
        return Response(b'{"id": ', media_type="application/activity+json")

    routes = [
        Route("/actor", actor),
        Route("/inbox", inbox, methods=["POST"]),
        Route("/redirect", redirect, methods=["GET", "POST"]),
        Route("/loop", loop),
        Route("/status/{code:int}", status, methods=["GET", "POST"]),
        Route("/big", big),
        Route("/declared-big", declared_big),
        Route("/trickle", trickle),
        Route("/html", html),
        Route("/array", array),
        Route("/broken", broken),
    ]
    return recording(Starlette(routes=routes), log)


@dataclass
class Remote:
    name: str
    server: RunningServer
    received: list[Received]

    def url(self, path: str) -> str:
        return f"{self.server.scheme}://{self.name}{path}"


@pytest.fixture
def alice(serve_asgi: Callable[..., RunningServer]) -> Remote:
    log: list[Received] = []
    server = serve_asgi(remote_app("alice.test", log), address="127.0.0.2", tls_names=("alice.test",))
    return Remote("alice.test", server, log)


@pytest.fixture
def bob(serve_asgi: Callable[..., RunningServer]) -> Remote:
    log: list[Received] = []
    server = serve_asgi(remote_app("bob.test", log), address="127.0.0.3", tls_names=("bob.test",))
    return Remote("bob.test", server, log)


MakeClient = Callable[..., FederationClient]


@pytest.fixture
async def make_client(
    tmp_path: Path, ca_bundle: Path, serve_asgi: Callable[..., RunningServer]
) -> AsyncIterator[MakeClient]:
    """``make_client(resolve=..., allow_http=..., ca=..., **timeouts)``; all closed after the test.

    It depends on ``serve_asgi`` so that clients close before the servers stop:
    a server stopping under an idle TLS connection waits for its close_notify.
    """
    clients: list[FederationClient] = []

    def make(
        *, resolve: str = "", allow_http: bool = False, ca: Path | None = None, **options: Any
    ) -> FederationClient:
        settings = Settings(
            data_dir=tmp_path, resolve=resolve, allow_http=allow_http, ca_bundle=str(ca or ca_bundle)
        )
        options.setdefault("connect_timeout", 2.0)
        options.setdefault("read_timeout", 2.0)
        options.setdefault("total_timeout", 5.0)
        client = FederationClient(settings, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def client(make_client: MakeClient, alice: Remote, bob: Remote) -> FederationClient:
    """A client that reaches alice.test and bob.test through MICROFEDI_RESOLVE."""
    resolve = f"{alice.server.resolve_entry('alice.test')},{bob.server.resolve_entry('bob.test')}"
    return make_client(resolve=resolve, public_host="me.test")


def verify(received: Received, rsa_key: rsa.RSAPrivateKey) -> tuple[str, ...]:
    """Check a received request's signature with the signer's public key; returns what it covered."""
    signed = parse_signed_request(received.method, received.target, received.headers, bytes(received.body))
    assert signed.key_id == KEY_ID
    verify_signed_request(signed, rsa_key.public_key())
    return signed.covered


async def fails(call: Awaitable[Any]) -> FetchError:
    """The FetchError ``call`` raises; a hang (a broken deadline) fails the test instead."""
    with pytest.raises(FetchError) as caught:
        await asyncio.wait_for(call, 10)
    return caught.value


# --- signed requests ---------------------------------------------------------


async def test_signed_get_reaches_the_named_server_and_verifies(
    client: FederationClient, alice: Remote, signer: Signer, rsa_key: rsa.RSAPrivateKey
) -> None:
    final_url, document = await client.get_json("https://alice.test/actor#main-key", signer=signer)

    assert final_url == "https://alice.test/actor"
    assert document == {"id": "https://alice.test/actor", "type": "Person"}
    [received] = alice.received
    assert received.header("host") == "alice.test"  # the name, though we connected to 127.0.0.2
    assert received.header("accept").startswith("application/activity+json")
    assert received.header("user-agent") == "microfedi/0.1.0 (+https://me.test/)"
    assert verify(received, rsa_key) == ("(request-target)", "host", "date")


async def test_unsigned_get_sends_no_signature(client: FederationClient, alice: Remote) -> None:
    await client.get_json(alice.url("/actor"), signer=None, accept="application/jrd+json")

    [received] = alice.received
    assert received.header("signature") is None
    assert received.header("accept") == "application/jrd+json"


async def test_signed_post_carries_a_digest_that_verifies(
    client: FederationClient, alice: Remote, signer: Signer, rsa_key: rsa.RSAPrivateKey
) -> None:
    body = b'{"type": "Follow", "id": "https://me.test/follows/1"}'

    status = await client.post(alice.url("/inbox"), body, signer=signer)

    assert status == 202
    [received] = alice.received
    assert bytes(received.body) == body
    assert received.header("content-type") == "application/activity+json"
    assert received.header("digest") is not None
    assert verify(received, rsa_key) == ("(request-target)", "host", "date", "digest")
    received.body += b" "  # a body that is not the one signed no longer passes
    with pytest.raises(SignatureError, match="digest does not match the body"):
        verify(received, rsa_key)


# --- redirects ---------------------------------------------------------------


async def test_redirect_to_another_host_is_followed_and_signed_for_it(
    client: FederationClient, alice: Remote, bob: Remote, signer: Signer, rsa_key: rsa.RSAPrivateKey
) -> None:
    final_url, document = await client.get_json(
        alice.url("/redirect?to=https://bob.test/actor&code=301"), signer=signer
    )

    assert final_url == "https://bob.test/actor"
    assert document["id"] == "https://bob.test/actor"
    [first] = alice.received
    [second] = bob.received
    assert first.target == "/redirect?to=https://bob.test/actor&code=301"
    assert second.target == "/actor" and second.header("host") == "bob.test"
    verify(first, rsa_key)
    verify(second, rsa_key)


async def test_relative_redirect_resolves_against_the_current_url(
    client: FederationClient, alice: Remote, signer: Signer
) -> None:
    final_url, _ = await client.get_json(alice.url("/redirect?to=/actor&code=308"), signer=signer)

    assert final_url == "https://alice.test/actor"


async def test_redirect_loop_stops_after_three_hops(client: FederationClient, alice: Remote, signer: Signer) -> None:
    error = await fails(client.get_json(alice.url("/loop"), signer=signer))

    assert error.permanent and "more than 3 redirects" in error.reason
    assert len(alice.received) == 4  # the request and three redirects followed


async def test_redirect_to_unlisted_loopback_is_refused_without_connecting(
    client: FederationClient, alice: Remote, signer: Signer, silent_server: Callable[..., SilentServer]
) -> None:
    tripwire = silent_server("127.0.0.1")

    error = await fails(
        client.get_json(alice.url(f"/redirect?to=https://localhost:{tripwire.port}/actor"), signer=signer)
    )

    assert error.permanent and error.reason.startswith("refused: localhost resolves to")
    assert error.host == "localhost"
    assert tripwire.connections == 0


async def test_redirect_to_plain_http_is_refused(client: FederationClient, alice: Remote, signer: Signer) -> None:
    error = await fails(client.get_json(alice.url("/redirect?to=http://alice.test/actor"), signer=signer))

    assert error.permanent and "only https" in error.reason
    assert len(alice.received) == 1


async def test_post_does_not_follow_redirects(
    client: FederationClient, alice: Remote, bob: Remote, signer: Signer
) -> None:
    error = await fails(client.post(alice.url("/redirect?to=https://bob.test/inbox&code=307"), b"{}", signer=signer))

    assert error.status == 307 and not error.permanent
    assert bob.received == []


# --- where requests may go ---------------------------------------------------


async def test_loopback_names_and_addresses_are_refused_before_connecting(
    make_client: MakeClient, signer: Signer, silent_server: Callable[..., SilentServer]
) -> None:
    client = make_client()
    tripwire = silent_server("127.0.0.1")

    by_name = await fails(client.get_json(f"https://localhost:{tripwire.port}/actor", signer=signer))
    by_address = await fails(client.post(f"https://127.0.0.1:{tripwire.port}/inbox", b"{}", signer=signer))

    assert by_name.permanent and "localhost resolves to" in by_name.reason and "loopback" in by_name.reason
    assert by_address.permanent and by_address.reason == "refused: 127.0.0.1 is a loopback address"
    assert tripwire.connections == 0


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("https://10.0.0.1/actor", "private"),
        ("https://172.16.5.4/actor", "private"),
        ("https://192.168.1.1/actor", "private"),
        ("https://100.64.0.1/actor", "non-public"),  # CGNAT
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://0.0.0.0/actor", "unspecified"),
        ("https://224.0.0.1/actor", "multicast"),
        ("https://240.0.0.1/actor", "private"),  # reserved; Python counts it as private too
        ("https://[::1]/actor", "loopback"),
        ("https://[fc00::1]/actor", "private"),  # ULA
        ("https://[fe80::1]/actor", "link-local"),
        ("https://[::ffff:127.0.0.1]/actor", "loopback"),
        ("https://[64:ff9b::a00:1]/actor", "private"),  # NAT64 of 10.0.0.1
    ],
)
async def test_non_public_addresses_are_refused(
    make_client: MakeClient, signer: Signer, url: str, kind: str
) -> None:
    client = make_client(connect_timeout=0.2)

    error = await fails(client.get_json(url, signer=signer))

    assert error.permanent
    assert error.reason.endswith(f"is a {kind} address")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://alice.test/actor", "refused: only https URLs are fetched"),
        ("ftp://alice.test/actor", "refused: only https URLs are fetched"),
        ("alice.test/actor", "refused: only https URLs are fetched"),
        ("https://me:secret@alice.test/actor", "refused: URL carries credentials"),
        ("https:///actor", "URL has no host"),
    ],
)
async def test_urls_we_never_fetch(
    client: FederationClient, alice: Remote, signer: Signer, url: str, reason: str
) -> None:
    error = await fails(client.get_json(url, signer=signer))

    assert error.permanent and error.reason.startswith(reason)
    assert alice.received == []


def test_public_addresses_pass_the_check() -> None:
    for address in ("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "::ffff:93.184.215.14"):
        assert non_public_kind(ipaddress.ip_address(address)) is None


async def test_plain_http_needs_allow_http(
    make_client: MakeClient, serve_asgi: Callable[..., RunningServer], signer: Signer, rsa_key: rsa.RSAPrivateKey
) -> None:
    log: list[Received] = []
    server = serve_asgi(remote_app("plain.test", log), address="127.0.0.4")  # no TLS
    url = server.url("/actor")  # http://127.0.0.4:PORT/actor: plain http and a loopback address

    refused = await fails(make_client().get_json(url, signer=signer))
    assert refused.permanent and "only https" in refused.reason
    refused_literal = await fails(make_client().get_json("http://10.0.0.1/actor", signer=signer))
    assert refused_literal.permanent and "only https" in refused_literal.reason
    assert log == []

    final_url, document = await make_client(allow_http=True).get_json(url, signer=signer)
    assert final_url == url and document["type"] == "Person"
    [received] = log
    verify(received, rsa_key)


def test_allow_http_is_logged_loudly(make_client: MakeClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="microfedi.federation.http"):
        make_client(allow_http=True)

    assert any("ALLOW_HTTP is on" in record.message for record in caplog.records)


@pytest.mark.parametrize(
    "resolve", ["alice.test", "alice.test=not-an-address:80", "=127.0.0.2:80", "a.test=127.0.0.2:99999"]
)
def test_malformed_resolve_entries_are_config_errors(make_client: MakeClient, resolve: str) -> None:
    with pytest.raises(ConfigError, match="name=address"):
        make_client(resolve=resolve)


async def test_resolve_accepts_ipv6_and_omitted_ports(
    make_client: MakeClient, silent_server: Callable[..., SilentServer], signer: Signer
) -> None:
    tripwire = silent_server("127.0.0.1")
    client = make_client(resolve="six.test=[::1]:1, four.test=127.0.0.1", connect_timeout=0.5)

    # Pinned names may go to loopback; with no port the URL's own port is used.
    error = await fails(client.get_json(f"https://four.test:{tripwire.port}/actor", signer=signer))

    assert not error.permanent and error.reason == "timed out"  # it connected; TLS never started
    assert tripwire.connections == 1
    assert not (await fails(client.get_json("https://six.test/actor", signer=signer))).permanent


# --- TLS ---------------------------------------------------------------------


async def test_certificate_for_another_name_is_rejected(
    make_client: MakeClient, serve_asgi: Callable[..., RunningServer], signer: Signer
) -> None:
    server = serve_asgi(remote_app("other.test", []), address="127.0.0.5", tls_names=("other.test",))
    client = make_client(resolve=server.resolve_entry("alice.test"))

    error = await fails(client.get_json("https://alice.test/actor", signer=signer))

    assert not error.permanent and "certificate" in error.reason.lower()


async def test_certificate_from_an_unknown_ca_is_rejected(
    make_client: MakeClient, alice: Remote, signer: Signer, tmp_path: Path
) -> None:
    stranger = tmp_path / "stranger.pem"
    trustme.CA().cert_pem.write_to_path(str(stranger))
    client = make_client(resolve=alice.server.resolve_entry("alice.test"), ca=stranger)

    error = await fails(client.get_json("https://alice.test/actor", signer=signer))

    assert not error.permanent and "certificate verify failed" in error.reason
    assert alice.received == []


def test_unreadable_ca_bundle_is_a_config_error(make_client: MakeClient, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ca_bundle"):
        make_client(ca=tmp_path / "missing.pem")


# --- sizes, timeouts, what comes back -----------------------------------------


async def test_streamed_body_over_the_cap_is_refused(
    client: FederationClient, alice: Remote, signer: Signer
) -> None:
    error = await fails(client.get_json(alice.url("/big"), signer=signer))
    assert error.permanent and error.reason == f"response is larger than {1 << 20} bytes"

    _, document = await client.get_json(alice.url("/big"), signer=signer, max_bytes=8 << 20)
    assert len(document["pad"]) == FIVE_MIB


async def test_declared_oversize_is_refused_before_reading(
    make_client: MakeClient, alice: Remote, signer: Signer
) -> None:
    # The body never comes: waiting for it would take the whole read timeout.
    client = make_client(resolve=alice.server.resolve_entry("alice.test"), read_timeout=5.0, total_timeout=10.0)
    started = time.monotonic()

    error = await fails(client.get_json(alice.url("/declared-big"), signer=signer))

    assert error.permanent and "larger than" in error.reason
    assert time.monotonic() - started < 2


async def test_server_that_never_answers_times_out_as_temporary(
    make_client: MakeClient, silent_server: Callable[..., SilentServer], signer: Signer
) -> None:
    hang = silent_server("127.0.0.6")
    client = make_client(resolve=hang.resolve_entry("hang.test"), connect_timeout=0.5)
    started = time.monotonic()

    error = await fails(client.post("https://hang.test/inbox", b"{}", signer=signer))

    assert not error.permanent and error.reason == "timed out" and error.status is None
    assert time.monotonic() - started < 2
    assert hang.connections == 1


async def test_trickling_server_hits_the_total_deadline(
    make_client: MakeClient, alice: Remote, signer: Signer
) -> None:
    # Every read arrives well within the read timeout; only the deadline stops it.
    client = make_client(resolve=alice.server.resolve_entry("alice.test"), read_timeout=2.0, total_timeout=1.0)
    started = time.monotonic()

    error = await fails(client.get_json(alice.url("/trickle"), signer=signer))

    assert not error.permanent and error.reason == "timed out"
    assert 0.9 < time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("code", "permanent"),
    [(400, True), (403, True), (404, True), (410, True), (501, True), (401, False), (408, False),
     (429, False), (500, False), (502, False), (503, False)],
)
async def test_status_classification(
    client: FederationClient, alice: Remote, signer: Signer, code: int, permanent: bool
) -> None:
    for call in (
        client.get_json(alice.url(f"/status/{code}"), signer=signer),
        client.post(alice.url(f"/status/{code}"), b"{}", signer=signer),
    ):
        error = await fails(call)
        assert (error.status, error.permanent) == (code, permanent)
        assert error.reason.startswith(f"answered {code}")


async def test_retry_after_is_read_from_429_and_503(client: FederationClient, alice: Remote, signer: Signer) -> None:
    in_90_seconds = email.utils.formatdate(time.time() + 90, usegmt=True).replace(" ", "%20").replace(",", "%2C")

    too_many = await fails(client.post(alice.url("/status/429?retry_after=120"), b"{}", signer=signer))
    unavailable = await fails(client.get_json(alice.url(f"/status/503?retry_after={in_90_seconds}"), signer=signer))
    broken = await fails(client.get_json(alice.url("/status/500?retry_after=120"), signer=signer))

    assert too_many.retry_after == 120.0
    assert unavailable.retry_after is not None and 85 <= unavailable.retry_after <= 90
    assert broken.retry_after is None


@pytest.mark.parametrize(
    ("path", "reason"),
    [("/html", "response is text/html, not JSON"), ("/array", "response is JSON but not an object"),
     ("/broken", "response is not valid JSON")],
)
async def test_documents_that_are_not_json_objects_are_permanent_failures(
    client: FederationClient, alice: Remote, signer: Signer, path: str, reason: str
) -> None:
    error = await fails(client.get_json(alice.url(path), signer=signer))

    assert error.permanent and error.reason == reason and error.status == 200
