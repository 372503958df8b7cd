"""The deliveries' client against real servers on loopback (https via trustme).

Two kinds of server: uvicorn serving a small ASGI inbox (what a fediverse
server looks like from outside), and `RawServer`, an HTTP/1.1 server written
out by hand for what uvicorn will not do on cue (hang up at a chosen moment,
talk on an idle connection). Every test runs on both asyncio's own event
loop and uvloop, which `microfedi run` uses: their TLS code differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trustme
import uvloop
from federation.peers import new_rsa_key
from federation.test_http import fails
from starlette.types import ASGIApp, Receive, Scope, Send

from microfedi.config import Settings
from microfedi.federation.delivery_client import DeliveryClient
from microfedi.federation.http import Signer
from microfedi.federation.signatures import parse_signed_request, verify_signed_request

if TYPE_CHECKING:
    from loopback_fixtures import RunningServer, SilentServer

KEY_ID = "https://me.test/actor#main-key"
BODY = b'{"type": "Create", "id": "https://me.test/activities/1"}'
BIG = 1 << 20  # well past what the client reads of an answer (64 KiB)


# pytest-asyncio 1.x prefers a `pytest_asyncio_loop_factories` hook, which
# only a conftest can hold; until the suite has one, this override (still
# honoured) is how these tests get both loops.
pytestmark = pytest.mark.filterwarnings("ignore:Overriding the \"event_loop_policy\" fixture:DeprecationWarning")


@pytest.fixture(params=["asyncio", "uvloop"])
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    return uvloop.EventLoopPolicy() if request.param == "uvloop" else asyncio.DefaultEventLoopPolicy()


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer(KEY_ID, new_rsa_key())


# --- an inbox served by uvicorn ----------------------------------------------


@dataclass
class Delivery:
    """A POST as the inbox server saw it, with the client port it came from."""

    target: str
    headers: list[tuple[str, str]]
    body: bytes
    client_port: int


def inbox_app(seen: list[Delivery]) -> ASGIApp:
    """An inbox at /inbox (202), answers of any status at /status/CODE, and long answers.

    ``/big`` answers with a declared 1 MiB body, ``/big-chunked`` with 1 MiB
    in chunks, ``/small-chunked`` with a few bytes in chunks.
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        query = scope["query_string"].decode()
        target = scope["raw_path"].decode() + (f"?{query}" if query else "")
        headers = [(name.decode(), value.decode()) for name, value in scope["headers"]]
        seen.append(Delivery(target, headers, body, scope["client"][1]))

        path = scope["path"]
        status, extra, chunks = 202, [], [b""]
        if path.startswith("/status/"):
            status, chunks = int(path.removeprefix("/status/")), [b"not here"]
            if query.startswith("retry_after="):
                extra = [(b"retry-after", query.removeprefix("retry_after=").encode())]
        elif path == "/big":
            extra, chunks = [(b"content-length", str(BIG).encode())], [b"x" * BIG]
        elif path == "/big-chunked":
            chunks = [b"x" * (64 << 10)] * (BIG // (64 << 10))
        elif path == "/small-chunked":
            chunks = [b"thank", b" ", b"you"]
        if len(chunks) == 1 and not extra:
            extra = [(b"content-length", str(len(chunks[0])).encode())]
        await send({"type": "http.response.start", "status": status, "headers": extra})
        for index, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": index < len(chunks) - 1})

    return app


@dataclass
class Inbox:
    """The uvicorn inbox server, reached as ``name`` through MICROFEDI_RESOLVE."""

    name: str
    server: RunningServer
    seen: list[Delivery]

    def url(self, path: str = "/inbox") -> str:
        return f"{self.server.scheme}://{self.name}{path}"

    def connections(self) -> int:
        return len({delivery.client_port for delivery in self.seen})


@pytest.fixture
def inbox(serve_asgi: Callable[..., RunningServer]) -> Inbox:
    seen: list[Delivery] = []
    server = serve_asgi(inbox_app(seen), address="127.0.0.2", tls_names=("inbox.test", "second.test"))
    return Inbox("inbox.test", server, seen)


# --- a server written out by hand ----------------------------------------------

ANSWER_202 = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"
ANSWER_202_CLOSE = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
IDLE_408 = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass
class RawServer:
    """An https server that reads POSTs and does what ``behaviour`` says for each.

    ``behaviour(connection, request)`` gets the connection's number (from 1)
    and the request's number on it (from 1) and returns one of:
    ``"answer"`` (202, keep alive), ``"answer-close"`` (202 with Connection:
    close), ``"answer-then-hang-up"`` (202, then close the connection 0.1 s
    later without a word), ``"answer-then-408"`` (202, then send a 408 on the
    idle connection 0.1 s later), ``"hang-up"`` (close without answering) or
    ``"hold"`` (never answer).
    """

    name: str
    address: str
    port: int
    behaviour: Callable[[int, int], str]
    connections: int = 0
    requests: list[tuple[int, int]] = field(default_factory=list)
    closed_by_client: int = 0

    def resolve_entry(self) -> str:
        return f"{self.name}={self.address}:{self.port}"

    def url(self) -> str:
        return f"https://{self.name}/inbox"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection = self.connections
        try:
            for number in range(1, 100):
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    self.closed_by_client += 1
                    return
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                await reader.readexactly(int(length[1]) if length else 0)
                self.requests.append((connection, number))
                action = self.behaviour(connection, number)
                if action == "hang-up":
                    return
                if action == "hold":
                    await until_the_client_leaves(reader)
                    return
                writer.write(ANSWER_202_CLOSE if action == "answer-close" else ANSWER_202)
                await writer.drain()
                if action == "answer-close":
                    return
                if action in ("answer-then-hang-up", "answer-then-408"):
                    await asyncio.sleep(0.1)
                    if action == "answer-then-hang-up":
                        return
                    writer.write(IDLE_408)
                    await until_the_client_leaves(reader)
                    return
        finally:
            writer.close()


async def until_the_client_leaves(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError):
        await reader.read()


@pytest.fixture
async def raw_server(tls_ca: trustme.CA) -> AsyncIterator[Callable[..., Awaitable[RawServer]]]:
    """``await raw_server(behaviour)`` listens on 127.0.0.7 as raw.test (https)."""
    servers: list[asyncio.Server] = []
    handlers: set[asyncio.Task[Any]] = set()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("raw.test").configure_cert(context)

    async def start(behaviour: Callable[[int, int], str]) -> RawServer:
        raw = RawServer("raw.test", "127.0.0.7", 0, behaviour)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            handlers.add(asyncio.current_task())  # type: ignore[arg-type]
            await raw.handle(reader, writer)

        server = await asyncio.start_server(handle, raw.address, 0, ssl=context)
        servers.append(server)
        raw.port = server.sockets[0].getsockname()[1]
        return raw

    yield start
    for server in servers:
        server.close()
    for handler in handlers:
        handler.cancel()
    await asyncio.gather(*handlers, return_exceptions=True)


MakeClient = Callable[..., DeliveryClient]


@pytest.fixture
async def make_client(
    tmp_path: Path,
    ca_bundle: Path,
    serve_asgi: Callable[..., RunningServer],
    raw_server: Callable[..., Awaitable[RawServer]],
) -> AsyncIterator[MakeClient]:
    """``make_client(resolve=..., allow_http=..., **options)``; closed before the servers stop."""
    clients: list[DeliveryClient] = []

    def make(*, resolve: str = "", allow_http: bool = False, **options: Any) -> DeliveryClient:
        settings = Settings(data_dir=tmp_path, resolve=resolve, allow_http=allow_http, ca_bundle=str(ca_bundle))
        options.setdefault("connect_timeout", 2.0)
        options.setdefault("total_timeout", 5.0)
        client = DeliveryClient(settings, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def client(make_client: MakeClient, inbox: Inbox) -> DeliveryClient:
    names = ",".join(inbox.server.resolve_entry(name) for name in ("inbox.test", "second.test"))
    return make_client(resolve=names, public_host="me.test")


async def eventually(check: Callable[[], bool]) -> None:
    """Wait up to 2 s for ``check()`` to hold (the other end of a socket takes a moment)."""
    deadline = time.monotonic() + 2
    while not check():
        assert time.monotonic() < deadline, "condition not reached in 2 s"
        await asyncio.sleep(0.01)


# --- what is sent --------------------------------------------------------------


async def test_post_is_signed_and_verifies_at_the_server(client: DeliveryClient, inbox: Inbox, signer: Signer) -> None:
    status = await client.post(inbox.url("/inbox?from=me"), BODY, signer=signer)

    assert status == 202
    [delivery] = inbox.seen
    assert delivery.target == "/inbox?from=me" and delivery.body == BODY
    headers = dict(delivery.headers)
    assert headers["host"] == "inbox.test"  # the name, though we connected to 127.0.0.2
    assert headers["content-type"] == "application/activity+json"
    assert headers["content-length"] == str(len(BODY))
    assert headers["accept-encoding"] == "identity"
    assert headers["user-agent"] == "microfedi/0.1.0 (+https://me.test/)"
    signed = parse_signed_request("POST", delivery.target, delivery.headers, delivery.body)
    assert signed.key_id == KEY_ID
    assert signed.covered == ("(request-target)", "host", "date", "digest")
    verify_signed_request(signed, signer.private_key.public_key())


# --- keeping connections -------------------------------------------------------


async def test_sequential_posts_to_one_host_use_one_connection(
    client: DeliveryClient, inbox: Inbox, signer: Signer
) -> None:
    for _ in range(5):
        assert await client.post(inbox.url(), BODY, signer=signer) == 202

    assert len(inbox.seen) == 5
    assert inbox.connections() == 1
    assert client.idle_connections == 1


async def test_idle_connections_are_capped_per_host_and_in_all(
    make_client: MakeClient, inbox: Inbox, signer: Signer
) -> None:
    names = ",".join(inbox.server.resolve_entry(name) for name in ("inbox.test", "second.test"))
    client = make_client(resolve=names, idle_per_host=2, idle_total=3)

    await asyncio.gather(*(client.post(inbox.url(), BODY, signer=signer) for _ in range(4)))
    assert inbox.connections() == 4
    assert client.idle_connections == 2  # per host

    await asyncio.gather(*(client.post("https://second.test/inbox", BODY, signer=signer) for _ in range(2)))
    assert client.idle_connections == 3  # in all


async def test_small_chunked_answer_is_read_and_the_connection_kept(
    client: DeliveryClient, inbox: Inbox, signer: Signer
) -> None:
    for _ in range(3):
        assert await client.post(inbox.url("/small-chunked"), BODY, signer=signer) == 202

    assert inbox.connections() == 1


@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
async def test_long_answer_is_not_read_and_its_connection_is_dropped(
    client: DeliveryClient, inbox: Inbox, signer: Signer, path: str
) -> None:
    assert await client.post(inbox.url(path), BODY, signer=signer) == 202
    assert client.idle_connections == 0

    assert await client.post(inbox.url(), BODY, signer=signer) == 202
    assert inbox.connections() == 2


async def test_connection_close_is_honoured(
    make_client: MakeClient, raw_server: Callable[..., Awaitable[RawServer]], signer: Signer
) -> None:
    raw = await raw_server(lambda connection, request: "answer-close")
    client = make_client(resolve=raw.resolve_entry())

    for _ in range(2):
        assert await client.post(raw.url(), BODY, signer=signer) == 202
        assert client.idle_connections == 0

    assert raw.requests == [(1, 1), (2, 1)]


async def test_connection_the_server_closed_while_idle_is_replaced(
    make_client: MakeClient, raw_server: Callable[..., Awaitable[RawServer]], signer: Signer
) -> None:
    raw = await raw_server(lambda connection, request: "answer-then-hang-up")
    client = make_client(resolve=raw.resolve_entry())

    assert await client.post(raw.url(), BODY, signer=signer) == 202
    await asyncio.sleep(0.3)  # the server hangs up after 0.1 s
    assert await client.post(raw.url(), BODY, signer=signer) == 202

    # The closed connection was noticed before anything was sent on it.
    assert raw.requests == [(1, 1), (2, 1)]


async def test_kept_connection_closed_as_the_request_goes_out_is_retried_once(
    make_client: MakeClient, raw_server: Callable[..., Awaitable[RawServer]], signer: Signer
) -> None:
    # Each connection answers its first request and hangs up on its second
    # without a word, as a server whose idle timeout strikes at that moment.
    raw = await raw_server(lambda connection, request: "answer" if request == 1 else "hang-up")
    client = make_client(resolve=raw.resolve_entry())

    for _ in range(2):
        assert await client.post(raw.url(), BODY, signer=signer) == 202

    assert raw.requests == [(1, 1), (1, 2), (2, 1)]


async def test_a_fresh_connection_that_fails_is_not_retried(
    make_client: MakeClient, raw_server: Callable[..., Awaitable[RawServer]], signer: Signer
) -> None:
    raw = await raw_server(lambda connection, request: "answer" if (connection, request) == (1, 1) else "hang-up")
    client = make_client(resolve=raw.resolve_entry())
    assert await client.post(raw.url(), BODY, signer=signer) == 202

    error = await fails(client.post(raw.url(), BODY, signer=signer))

    assert not error.permanent and error.reason.startswith("connection failed")
    assert raw.requests == [(1, 1), (1, 2), (2, 1)]  # the kept one, then one retry
    assert client.idle_connections == 0


async def test_words_on_an_idle_connection_are_not_taken_for_an_answer(
    make_client: MakeClient, raw_server: Callable[..., Awaitable[RawServer]], signer: Signer
) -> None:
    raw = await raw_server(lambda connection, request: "answer-then-408")
    client = make_client(resolve=raw.resolve_entry())

    assert await client.post(raw.url(), BODY, signer=signer) == 202
    await asyncio.sleep(0.3)  # the 408 arrives after 0.1 s
    assert await client.post(raw.url(), BODY, signer=signer) == 202

    assert raw.requests == [(1, 1), (2, 1)]


async def test_idle_connections_are_closed_after_the_idle_timeout_and_on_aclose(
    make_client: MakeClient, raw_server: Callable[..., Awaitable[RawServer]], signer: Signer
) -> None:
    raw = await raw_server(lambda connection, request: "answer")
    client = make_client(resolve=raw.resolve_entry(), idle_timeout=0.2)

    assert await client.post(raw.url(), BODY, signer=signer) == 202
    assert client.idle_connections == 1
    await eventually(lambda: raw.closed_by_client == 1)  # swept after 0.2–0.25 s
    assert client.idle_connections == 0

    assert await client.post(raw.url(), BODY, signer=signer) == 202
    await client.aclose()
    assert client.idle_connections == 0
    await eventually(lambda: raw.closed_by_client == 2)


# --- what answers mean ---------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "permanent"),
    [(400, True), (403, True), (404, True), (410, True), (501, True), (302, False), (401, False),
     (408, False), (429, False), (500, False), (502, False), (503, False)],
)  # fmt: skip
async def test_status_classification(
    client: DeliveryClient, inbox: Inbox, signer: Signer, code: int, permanent: bool
) -> None:
    error = await fails(client.post(inbox.url(f"/status/{code}"), BODY, signer=signer))

    assert (error.status, error.permanent) == (code, permanent)
    assert error.reason.startswith(f"answered {code}")
    assert client.idle_connections == 1  # an error answer does not cost the connection


async def test_retry_after_is_read_from_429_and_503(client: DeliveryClient, inbox: Inbox, signer: Signer) -> None:
    too_many = await fails(client.post(inbox.url("/status/429?retry_after=120"), BODY, signer=signer))
    unavailable = await fails(client.post(inbox.url("/status/503?retry_after=30"), BODY, signer=signer))
    broken = await fails(client.post(inbox.url("/status/500?retry_after=120"), BODY, signer=signer))

    assert (too_many.retry_after, unavailable.retry_after, broken.retry_after) == (120.0, 30.0, None)


# --- where deliveries may go ------------------------------------------------------


async def test_loopback_targets_are_refused_before_connecting(
    make_client: MakeClient, signer: Signer, silent_server: Callable[..., SilentServer]
) -> None:
    client = make_client()
    tripwire = silent_server("127.0.0.1")

    by_name = await fails(client.post(f"https://localhost:{tripwire.port}/inbox", BODY, signer=signer))
    by_address = await fails(client.post(f"https://127.0.0.1:{tripwire.port}/inbox", BODY, signer=signer))

    assert by_name.permanent and "localhost resolves to" in by_name.reason and "loopback" in by_name.reason
    assert by_address.permanent and by_address.reason == "refused: 127.0.0.1 is a loopback address"
    assert tripwire.connections == 0


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("https://10.0.0.1/inbox", "private"),
        ("https://100.64.0.1/inbox", "non-public"),
        ("https://169.254.169.254/inbox", "link-local"),
        ("https://[fc00::1]/inbox", "private"),
        ("https://[::ffff:127.0.0.1]/inbox", "loopback"),
    ],
)
async def test_non_public_addresses_are_refused(make_client: MakeClient, signer: Signer, url: str, kind: str) -> None:
    error = await fails(make_client().post(url, BODY, signer=signer))

    assert error.permanent and error.reason.endswith(f"is a {kind} address")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://inbox.test/inbox", "refused: only https URLs are fetched"),
        ("https://me:secret@inbox.test/inbox", "refused: URL carries credentials"),
        ("https:///inbox", "URL has no host"),
        ("https://inbox.test:99999/inbox", "not a valid URL"),
    ],
)
async def test_urls_we_never_post_to(
    client: DeliveryClient, inbox: Inbox, signer: Signer, url: str, reason: str
) -> None:
    error = await fails(client.post(url, BODY, signer=signer))

    assert error.permanent and error.reason.startswith(reason)
    assert inbox.seen == []


async def test_plain_http_and_private_addresses_need_allow_http(
    make_client: MakeClient, serve_asgi: Callable[..., RunningServer], signer: Signer
) -> None:
    seen: list[Delivery] = []
    server = serve_asgi(inbox_app(seen), address="127.0.0.4")  # no TLS
    url = server.url("/inbox")  # http://127.0.0.4:PORT/inbox: plain http and a loopback address

    refused = await fails(make_client().post(url, BODY, signer=signer))
    assert refused.permanent and "only https" in refused.reason
    assert seen == []

    assert await make_client(allow_http=True).post(url, BODY, signer=signer) == 202
    assert len(seen) == 1


# --- TLS and time ---------------------------------------------------------------


async def test_certificate_for_another_name_is_rejected(
    make_client: MakeClient, serve_asgi: Callable[..., RunningServer], signer: Signer
) -> None:
    seen: list[Delivery] = []
    server = serve_asgi(inbox_app(seen), address="127.0.0.5", tls_names=("other.test",))
    client = make_client(resolve=server.resolve_entry("inbox.test"))

    error = await fails(client.post("https://inbox.test/inbox", BODY, signer=signer))

    assert not error.permanent and error.reason.startswith("cannot connect") and "certificate" in error.reason
    assert seen == []


async def test_server_that_never_starts_tls_times_out_as_temporary(
    make_client: MakeClient, silent_server: Callable[..., SilentServer], signer: Signer
) -> None:
    hang = silent_server("127.0.0.6")
    client = make_client(resolve=hang.resolve_entry("hang.test"), connect_timeout=0.5)
    started = time.monotonic()

    error = await fails(client.post("https://hang.test/inbox", BODY, signer=signer))

    assert not error.permanent and error.reason == "timed out" and error.status is None
    assert time.monotonic() - started < 1.5
    assert hang.connections == 1


async def test_server_that_never_answers_hits_the_total_deadline(
    make_client: MakeClient, raw_server: Callable[..., Awaitable[RawServer]], signer: Signer
) -> None:
    raw = await raw_server(lambda connection, request: "hold")
    client = make_client(resolve=raw.resolve_entry(), total_timeout=0.5)
    started = time.monotonic()

    error = await fails(client.post(raw.url(), BODY, signer=signer))

    assert not error.permanent and error.reason == "timed out"
    assert 0.4 < time.monotonic() - started < 1.5
    assert raw.requests == [(1, 1)]  # sent once, never retried
    assert client.idle_connections == 0
