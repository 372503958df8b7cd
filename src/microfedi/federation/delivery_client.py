"""Deliveries: signed POSTs to inboxes over lean HTTP/1.1 with per-host keep-alive.

A fan-out is thousands of small POSTs, and one RSA signature each should be
most of their cost. Through httpx most of it went to the client stack instead:
httpx, httpcore and anyio took 41–49 % of the event loop, and httpcore's pool
scans every connection on every request, so keeping many connections alive
made it slower (bench/RESULTS.md, "Fan-out"). `DeliveryClient` speaks just
enough HTTP/1.1 for a POST over asyncio streams, and keeps idle connections in
a dict by origin, so a repeated fan-out to the same servers skips TCP and TLS.

It follows the same rules as `FederationClient` by using the same code
(`OutboundRules`): https only unless ``allow_http``; names resolved and every
address checked before connecting, pinned names (``resolve``) sent where they
are pinned; the connection goes to the checked address while TLS verifies the
URL's name; the same CA bundle; the same signature and result contract
(`FetchError` with ``permanent`` and ``retry_after``). GETs of actors and keys,
which follow redirects and check content types, stay with `FederationClient`.

Public API::

    DeliveryClient(settings, *, public_host=None, connect_timeout=5.0,
                   total_timeout=25.0, idle_per_host=2, idle_total=256,
                   idle_timeout=60.0)
        await post(url, body, *, signer, content_type=ACTIVITY_JSON) -> status
        idle_connections -> int
        await aclose()
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from microfedi.config import Settings
from microfedi.federation.http import (
    ACCEPT_ACTIVITY,
    ACTIVITY_JSON,
    DISCARD_MAX_BYTES,
    FetchError,
    OutboundRules,
    RefusedTarget,
    Signer,
    raise_for_status,
)
from microfedi.federation.signatures import sign_request

# Status line and headers of an answer; a longer head is a broken server.
HEAD_MAX_BYTES = 64 << 10
# Interim answers (100 Continue, 103 Early Hints) skipped before the real one.
_MAX_INTERIM_RESPONSES = 4
_CLOSE_WAIT = 1.0  # how long aclose() waits for TLS close_notify exchanges

Origin = tuple[str, str, int]  # scheme, host name, port


class _ResponseReader(asyncio.StreamReader):
    """A StreamReader that notices bytes arriving while its connection sits idle.

    An idle HTTP/1.1 connection has nothing to say; a server that speaks
    anyway (often a 408 before it hangs up) would have that answer read as the
    answer to our next request.
    """

    idle = False
    spoke_while_idle = False

    def feed_data(self, data: bytes) -> None:
        if self.idle:
            self.spoke_while_idle = True
        super().feed_data(data)


@dataclass(eq=False)
class _Connection:
    """One open HTTP/1.1 connection and whether it has carried a request before."""

    reader: _ResponseReader
    writer: asyncio.StreamWriter
    reused: bool = False
    idle_since: float = 0.0

    def usable(self) -> bool:
        """Still open, and nothing arrived while it was idle."""
        return not (self.writer.transport.is_closing() or self.reader.at_eof() or self.reader.spoke_while_idle)

    def close(self) -> None:
        """Hang up politely (TLS close_notify first); for a connection with nothing in flight."""
        self.writer.close()

    def abort(self) -> None:
        """Drop the connection at once: a request or an answer was cut short."""
        self.writer.transport.abort()


class _IdlePool:
    """Idle keep-alive connections by origin, bounded per origin and in all.

    Taking and giving back are O(1) per request. When the pool is full a
    returned connection is closed rather than one already kept: a fan-out to
    more servers than the pool holds then still reuses the pool's share of
    them, where evicting the oldest would reuse none. Connections idle longer
    than ``idle_timeout`` or closed by the server are swept out by a timer, so
    their file descriptors do not linger.
    """

    def __init__(self, per_origin: int, total: int, idle_timeout: float) -> None:
        self._per_origin = per_origin
        self._total = total
        self._idle_timeout = idle_timeout
        self._idle: dict[Origin, list[_Connection]] = {}
        self._count = 0
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    def __len__(self) -> int:
        return self._count

    def take(self, origin: Origin) -> _Connection | None:
        """The most recently used idle connection to ``origin`` that is still good, or None."""
        kept = self._idle.get(origin)
        while kept:
            connection = kept.pop()
            self._count -= 1
            if not kept:
                del self._idle[origin]
            if self._fresh(connection, time.monotonic()):
                connection.reader.idle = False
                connection.reused = True
                return connection
            connection.close()
        return None

    def give_back(self, origin: Origin, connection: _Connection) -> None:
        """Keep a connection whose exchange is complete, or close it when there is no room."""
        kept = self._idle.get(origin, [])
        if self._closed or len(kept) >= self._per_origin or self._count >= self._total:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        connection.reader.idle = True
        kept.append(connection)
        self._idle[origin] = kept
        self._count += 1
        if self._sweeper is None:
            self._schedule_sweep()

    async def close(self) -> None:
        """Close every idle connection; connections given back later are closed too."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        connections = [connection for kept in self._idle.values() for connection in kept]
        self._idle.clear()
        self._count = 0
        for connection in connections:
            connection.close()
        if connections:
            # Let TLS say goodbye, but do not let a silent server hold up a shutdown.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CLOSE_WAIT):
                    waits = (connection.writer.wait_closed() for connection in connections)
                    await asyncio.gather(*waits, return_exceptions=True)

    def _fresh(self, connection: _Connection, now: float) -> bool:
        return now - connection.idle_since < self._idle_timeout and connection.usable()

    def _schedule_sweep(self) -> None:
        self._sweeper = asyncio.get_running_loop().call_later(self._idle_timeout / 4, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = time.monotonic()
        for origin in list(self._idle):
            kept = self._idle[origin]
            fresh = [connection for connection in kept if self._fresh(connection, now)]
            for connection in kept:
                if connection not in fresh:
                    connection.close()
            self._count -= len(kept) - len(fresh)
            if fresh:
                self._idle[origin] = fresh
            else:
                del self._idle[origin]
        if self._count:
            self._schedule_sweep()


@dataclass(frozen=True)
class _Response:
    """The head of an answer: status, reason, lower-case header names, and the HTTP version."""

    status: int
    reason: str
    headers: dict[str, str]
    http_1_0: bool

    def keeps_alive(self) -> bool:
        tokens = {token.strip().lower() for token in self.headers.get("connection", "").split(",")}
        return "keep-alive" in tokens if self.http_1_0 else "close" not in tokens


class _CannotConnect(Exception):
    """No connection could be made (lookup, TCP or TLS failed)."""


class _BadResponse(Exception):
    """The server's answer is not HTTP/1.1 we can read."""


class _NothingReceived(Exception):
    """The connection ended before the first byte of an answer."""


class DeliveryClient:
    """The process's client for deliveries: signed POSTs, kept-alive connections.

    ``connect_timeout`` covers the name lookup, TCP and TLS; ``total_timeout``
    one whole request, reconnects included. At most ``idle_per_host`` idle
    connections are kept per origin and ``idle_total`` in all (each is a file
    descriptor and some TLS state), each for ``idle_timeout`` seconds.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        public_host: str | None = None,
        connect_timeout: float = 5.0,
        total_timeout: float = 25.0,
        idle_per_host: int = 2,
        idle_total: int = 256,
        idle_timeout: float = 60.0,
    ) -> None:
        self._rules = OutboundRules.from_settings(settings, public_host=public_host)
        self._connect_timeout = connect_timeout
        self._total_timeout = total_timeout
        self._pool = _IdlePool(idle_per_host, idle_total, idle_timeout)
        # A fan-out goes to the same inboxes as the last one: checking a URL
        # costs about a tenth of a signature, looking it up next to nothing.
        self._inbox = functools.lru_cache(maxsize=4096)(self._checked_inbox)

    @property
    def idle_connections(self) -> int:
        """How many kept-alive connections wait in the pool."""
        return len(self._pool)

    async def post(self, url: str, body: bytes, *, signer: Signer, content_type: str = ACTIVITY_JSON) -> int:
        """POST ``body`` signed by ``signer`` (Digest included); returns the 2xx status.

        Redirects are not followed. Raises `FetchError`, classified as
        `FederationClient.post` does: refused targets and 4xx other than 401,
        408 and 429 (and 501) are permanent; connection failures, timeouts and
        other answers are temporary.
        """
        url, origin, target = self._inbox(url)
        wanted = {"Content-Type": content_type, "Accept": ACCEPT_ACTIVITY}
        headers = sign_request("POST", url, body, signer.key_id, signer.private_key, wanted)
        headers |= {"User-Agent": self._rules.user_agent, "Accept-Encoding": "identity"}
        headers["Content-Length"] = str(len(body))
        head = f"POST {target} HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        request = (head + "\r\n").encode("latin-1") + body
        try:
            async with asyncio.timeout(self._total_timeout):
                response = await self._exchange(origin, request)
        except RefusedTarget as exc:
            raise FetchError(url, f"refused: {exc}", permanent=True) from None
        except TimeoutError:
            raise FetchError(url, "timed out") from None
        except _CannotConnect as exc:
            raise FetchError(url, f"cannot connect: {exc}") from None
        except (_NothingReceived, _BadResponse, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError) as exc:
            raise FetchError(url, f"connection failed: {str(exc) or type(exc).__name__}") from None
        raise_for_status(url, response.status, response.reason, response.headers.get("retry-after"))
        return response.status

    async def aclose(self) -> None:
        """Close every kept connection; requests still running close theirs when done."""
        await self._pool.close()

    def _checked_inbox(self, url: str) -> tuple[str, Origin, str]:
        """The checked URL (a permanent FetchError if refused), its origin, and its request target."""
        url = self._rules.checked_url(url)
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError as exc:
            raise FetchError(url, f"not a valid URL: {exc}", permanent=True) from None
        scheme, host = parts.scheme, parts.hostname or ""  # checked_url refuses URLs without a host
        origin = (scheme, host, port if port is not None else (443 if scheme == "https" else 80))
        return url, origin, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    async def _exchange(self, origin: Origin, request: bytes) -> _Response:
        connection = self._pool.take(origin)
        if connection is not None:
            try:
                return await self._send(origin, connection, request)
            except _NothingReceived:
                # The server closed the kept connection as we sent: it cannot
                # have processed the request, so one fresh connection may.
                pass
        return await self._send(origin, await self._connect(origin), request)

    async def _connect(self, origin: Origin) -> _Connection:
        scheme, host, port = origin
        last_error: OSError | None = None
        async with asyncio.timeout(self._connect_timeout):
            try:
                addresses = await self._rules.resolver.addresses(host, port, None)
            except TimeoutError:
                raise
            except OSError as exc:
                raise _CannotConnect(str(exc)) from None
            for address, address_port in addresses:
                try:
                    return await self._open(address, address_port, host if scheme == "https" else None)
                except TimeoutError:
                    raise
                except ssl.SSLError as exc:
                    # A certificate problem is the same at every address of the name.
                    raise _CannotConnect(str(exc) or type(exc).__name__) from None
                except OSError as exc:
                    last_error = exc
        raise _CannotConnect(str(last_error) if last_error else f"{host} has no address")

    async def _open(self, address: str, port: int, tls_name: str | None) -> _Connection:
        """A connection to the checked ``address``; with ``tls_name``, TLS that verifies that name."""
        loop = asyncio.get_running_loop()
        reader = _ResponseReader(limit=HEAD_MAX_BYTES, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        tls = self._rules.ssl_context if tls_name else None
        transport, _ = await loop.create_connection(
            lambda: protocol,
            address,
            port,
            ssl=tls,
            server_hostname=tls_name,
            ssl_handshake_timeout=self._connect_timeout if tls else None,
        )
        return _Connection(reader, asyncio.StreamWriter(transport, protocol, reader, loop))

    async def _send(self, origin: Origin, connection: _Connection, request: bytes) -> _Response:
        """Write the request, read the answer's head and (when small) its body; keep or close the connection."""
        complete = False
        try:
            try:
                connection.writer.write(request)
                await connection.writer.drain()
                response = await _read_response_head(connection.reader)
            except (_NothingReceived, ConnectionError) as exc:
                # A reset loses whatever part of an answer came before it: for a
                # kept connection it means the same as a close before answering.
                if connection.reused:
                    raise _NothingReceived(str(exc) or type(exc).__name__) from None
                raise
            body_read = await _discard_body(connection.reader, response)
            complete = True
        finally:
            if not complete:
                connection.abort()
        if not body_read:
            connection.abort()  # an answer we chose not to read is still arriving
        elif response.keeps_alive():
            self._pool.give_back(origin, connection)
        else:
            connection.close()
        return response


async def _read_response_head(reader: asyncio.StreamReader) -> _Response:
    """The first final answer's head; interim 1xx answers are skipped."""
    for _ in range(_MAX_INTERIM_RESPONSES + 1):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise _NothingReceived("the server closed the connection without answering") from None
            raise _BadResponse("the answer was cut short") from None
        except asyncio.LimitOverrunError:
            raise _BadResponse(f"the answer's head is larger than {HEAD_MAX_BYTES} bytes") from None
        response = _parse_head(head)
        if not 100 <= response.status < 200:
            return response
    raise _BadResponse("too many interim answers")


def _parse_head(head: bytes) -> _Response:
    status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise _BadResponse(f"not an HTTP/1.1 status line: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise _BadResponse(f"malformed header line: {line[:80]!r}")
        name, value = name.lower(), value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return _Response(int(code), reason.strip(), headers, version == "HTTP/1.0")


async def _discard_body(reader: asyncio.StreamReader, response: _Response) -> bool:
    """Read and drop the answer's body if it is small; False when it was left unread.

    A body longer than `DISCARD_MAX_BYTES`, or one that only ends when the
    server closes, is not worth reading: the connection is dropped instead.
    """
    if response.status in (204, 304):
        return True
    encoding = response.headers.get("transfer-encoding")
    if encoding is not None:
        if encoding.lower().rsplit(",", 1)[-1].strip() != "chunked":
            return False
        return await _discard_chunked(reader)
    length = response.headers.get("content-length")
    if length is None:
        return False
    if not length.isdigit():
        raise _BadResponse(f"Content-Length {length[:40]!r} is not a number")
    if int(length) > DISCARD_MAX_BYTES:
        return False
    await reader.readexactly(int(length))
    return True


async def _discard_chunked(reader: asyncio.StreamReader) -> bool:
    size = 0
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError:
            raise _BadResponse("a chunk header is too long") from None
        size_text = line.partition(b";")[0].strip()
        if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
            raise _BadResponse(f"bad chunk size {size_text[:20]!r}")
        chunk = int(size_text, 16)
        if chunk == 0:
            break
        size += chunk
        if size > DISCARD_MAX_BYTES:
            return False
        await reader.readexactly(chunk + 2)
    # Trailer fields, if any, end with an empty line like the head does.
    while await reader.readuntil(b"\r\n") != b"\r\n":
        pass
    return True
