"""The one outbound HTTP client for federation: signed, size-capped, and safe.

Every server-to-server request goes through one `FederationClient` per process
(`instance.http`), except deliveries, which have a leaner client of their own
(`delivery_client.DeliveryClient`, `instance.deliveries`) bound by the same
rules. It applies DESIGN.md's "Outbound requests and safety":

* https URLs only, unless `allow_http` (local peers that speak plain http);
* each new connection resolves the name itself, refuses loopback, private
  (RFC 1918, CGNAT, ULA), link-local, multicast, unspecified and reserved
  addresses unless `allow_http`, and connects to the very address it checked —
  so a DNS answer that changes between the check and the connect (rebinding)
  cannot slip through — while TLS still verifies the name from the URL;
* `resolve` (``alice.test=127.0.0.2:8443,bob.test=127.0.0.3:8443``) pins names
  to addresses the way ``curl --resolve`` does; the operator chose those, so
  they are allowed whatever they are;
* short connect and read timeouts plus a deadline per request; bodies are
  capped on Content-Length and again while streaming;
* GETs follow up to three redirects, each hop checked and signed again; POSTs
  never follow redirects.

Failures are `FetchError`s that say whether trying again could help
(`permanent`) and how long the remote asked us to wait (`retry_after`).

The rules themselves (`OutboundRules`: URL checks, the address checks of
`TargetResolver`, the TLS context, the User-Agent) and the status
classification (`raise_for_status`) are public so that the deliveries' own
client (`delivery_client.DeliveryClient`) applies the very same ones.

Public API::

    ACTIVITY_JSON, ACCEPT_ACTIVITY, JSON_MAX_BYTES, MAX_REDIRECTS, DISCARD_MAX_BYTES
    Signer(key_id, private_key)
    FetchError(url, reason, *, status=None, permanent=False, retry_after=None)
        .url .host .status .permanent .retry_after .reason
    raise_for_status(url, status, reason, retry_after_header) -> None
    non_public_kind(address) -> str | None
    await read_capped(content_length, chunks, limit) -> bytes | None
    parse_resolve_map(text) -> {name: (address, port or None)}
    RefusedTarget
    TargetResolver(pins, *, allow_private)
        await addresses(host, port, timeout) -> [(address, port)]
    ssl_context(ca_bundle) -> ssl.SSLContext
    OutboundRules.from_settings(settings, *, public_host=None)
        .allow_http .resolver .ssl_context .user_agent
        checked_url(url) -> str
    FederationClient(settings, *, public_host=None, connect_timeout=5.0,
                     read_timeout=10.0, total_timeout=25.0)
        await get_json(url, *, signer, accept=ACCEPT_ACTIVITY,
                       max_bytes=JSON_MAX_BYTES) -> (final_url, dict)
        await post(url, body, *, signer, content_type=ACTIVITY_JSON) -> status
        await aclose()
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass
from typing import Any, Union
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

from microfedi import __version__
from microfedi.config import ConfigError, Settings
from microfedi.federation.signatures import PrivateKey, sign_request

log = logging.getLogger(__name__)

ACTIVITY_JSON = "application/activity+json"
ACCEPT_ACTIVITY = 'application/activity+json, application/ld+json; profile="https://www.w3.org/ns/activitystreams"'
JSON_MAX_BYTES = 1 << 20
MAX_REDIRECTS = 3

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Bodies we do not use (POST answers, errors, redirects) are read up to this
# size so the connection can go back to the pool; a longer one is not read,
# and the connection is closed instead.
DISCARD_MAX_BYTES = 64 << 10
# A Pi has little memory and few file descriptors to spare.
_POOL_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30.0)

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


@dataclass(frozen=True)
class Signer:
    """Who signs a request: the key id actors publish, and the loaded private key."""

    key_id: str
    private_key: PrivateKey


class FetchError(Exception):
    """A request that did not give us what we asked for.

    ``permanent`` is True when asking again cannot help: a refused target (an
    unsafe address, a scheme we do not fetch), a 4xx other than 401, 408 and
    429, a 501, too many redirects, a body too large or not a JSON object.
    Connection failures (TLS ones too: certificates get renewed), timeouts,
    other 5xx, 401, 408 and 429 are temporary. ``retry_after`` is the wait, in
    seconds, a 429 or 503 asked for.
    """

    def __init__(
        self,
        url: str,
        reason: str,
        *,
        status: int | None = None,
        permanent: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.status = status
        self.permanent = permanent
        self.retry_after = retry_after

    @property
    def host(self) -> str:
        """The URL's host name, lower-case ("" if the URL has none)."""
        return urlsplit(self.url).hostname or ""


class FederationClient:
    """The process's outbound HTTP client (one `httpx.AsyncClient` underneath).

    ``public_host`` names this install in the User-Agent, as remote admins
    expect. The timeouts are seconds: ``connect_timeout`` covers name lookup,
    TCP and TLS; ``read_timeout`` each read and write; ``total_timeout`` one
    whole request (one redirect hop) however slowly the remote trickles.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        public_host: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 10.0,
        total_timeout: float = 25.0,
    ) -> None:
        self._rules = OutboundRules.from_settings(settings, public_host=public_host)
        self._total_timeout = total_timeout
        transport = _CheckedTransport(self._rules.ssl_context, _CheckedNetworkBackend(self._rules.resolver))
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout),
            follow_redirects=False,
            trust_env=False,  # no proxies or .netrc from the environment: they would bypass the checks
            # identity: a size cap counts the bytes that arrive, so no gzip bomb
            # can blow up in memory before the cap sees it.
            headers={"User-Agent": self._rules.user_agent, "Accept-Encoding": "identity"},
        )

    async def get_json(
        self,
        url: str,
        *,
        signer: Signer | None,
        accept: str = ACCEPT_ACTIVITY,
        max_bytes: int = JSON_MAX_BYTES,
    ) -> tuple[str, dict[str, Any]]:
        """GET a JSON object, signed by ``signer`` when one is given.

        Follows up to `MAX_REDIRECTS` redirects, checking and signing each hop
        for its own URL. Returns the URL the object came from (after
        redirects, without a fragment) and the object. The response must have
        a JSON media type (``application/json`` or ``application/*+json``).
        Raises `FetchError`.
        """
        current = self._rules.checked_url(url)
        for _ in range(MAX_REDIRECTS + 1):
            headers = {"Accept": accept}
            if signer is not None:
                headers = sign_request("GET", current, None, signer.key_id, signer.private_key, headers)
            response, body = await self._exchange("GET", current, headers, None, max_bytes)
            if response.status_code not in _REDIRECT_STATUSES:
                _raise_for_status(current, response)
                return current, _json_object(current, response, body, max_bytes)
            location = response.headers.get("Location")
            if not location:
                raise FetchError(current, "redirect without a Location", status=response.status_code, permanent=True)
            current = self._rules.checked_url(urljoin(current, location))
        raise FetchError(url, f"more than {MAX_REDIRECTS} redirects", permanent=True)

    async def post(
        self, url: str, body: bytes, *, signer: Signer, content_type: str = ACTIVITY_JSON
    ) -> int:
        """POST ``body`` signed by ``signer`` (Digest included); returns the 2xx status.

        Redirects are not followed: a 3xx is a temporary `FetchError`, as is
        any answer the remote may change its mind about.
        """
        url = self._rules.checked_url(url)
        wanted = {"Content-Type": content_type, "Accept": ACCEPT_ACTIVITY}
        headers = sign_request("POST", url, body, signer.key_id, signer.private_key, wanted)
        response, _ = await self._exchange("POST", url, headers, body, DISCARD_MAX_BYTES)
        _raise_for_status(url, response)
        return response.status_code

    async def aclose(self) -> None:
        """Close every pooled connection; the client is unusable afterwards."""
        await self._client.aclose()

    async def _exchange(
        self, method: str, url: str, headers: dict[str, str], content: bytes | None, success_max_bytes: int
    ) -> tuple[httpx.Response, bytes | None]:
        """One request: the response (status and headers) and its body.

        A 2xx body is read up to ``success_max_bytes``, any other up to
        `DISCARD_MAX_BYTES`; the body is None when it is longer.
        """
        try:
            async with asyncio.timeout(self._total_timeout):
                async with self._client.stream(method, url, headers=headers, content=content) as response:
                    limit = success_max_bytes if response.is_success else DISCARD_MAX_BYTES
                    body = await read_capped(response.headers.get("Content-Length"), response.aiter_bytes(), limit)
                    return response, body
        except RefusedTarget as exc:
            raise FetchError(url, f"refused: {exc}", permanent=True) from None
        except (TimeoutError, httpx.TimeoutException):
            raise FetchError(url, "timed out") from None
        except httpx.ConnectError as exc:
            raise FetchError(url, f"cannot connect: {str(exc) or type(exc).__name__}") from None
        except httpx.TransportError as exc:
            raise FetchError(url, f"connection failed: {str(exc) or type(exc).__name__}") from None


async def read_capped(content_length: str | None, chunks: AsyncIterable[bytes], limit: int) -> bytes | None:
    """A body, or None as soon as it proves longer than ``limit`` bytes.

    ``content_length`` (the header, if any) is checked first, so a declared
    oversized body is not read at all; the running count over ``chunks``
    catches undeclared and compressed ones. Serves any HTTP body, sent or
    received.
    """
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        return None
    kept: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            return None
        kept.append(chunk)
    return b"".join(kept)


def _raise_for_status(url: str, response: httpx.Response) -> None:
    raise_for_status(url, response.status_code, response.reason_phrase, response.headers.get("Retry-After"))


def raise_for_status(url: str, status: int, reason: str, retry_after_header: str | None) -> None:
    """Nothing for a 2xx; otherwise the `FetchError` the answer means (permanent or not, Retry-After)."""
    if 200 <= status < 300:
        return
    retry_after = _retry_after(retry_after_header) if status in (429, 503) else None
    raise FetchError(
        url,
        f"answered {status} {reason}".rstrip(),
        status=status,
        permanent=_is_permanent(status),
        retry_after=retry_after,
    )


def _is_permanent(status: int) -> bool:
    # Mastodon's rule (response_error_unsalvageable?): a 401 may only mean the
    # remote could not fetch our key yet, 408 and 429 are about load.
    return status == 501 or (400 <= status < 500 and status not in (401, 408, 429))


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return max(0.0, email.utils.mktime_tz(parsed) - time.time())


def _json_object(url: str, response: httpx.Response, body: bytes | None, max_bytes: int) -> dict[str, Any]:
    status = response.status_code
    if body is None:
        raise FetchError(url, f"response is larger than {max_bytes} bytes", status=status, permanent=True)
    media_type = response.headers.get("Content-Type", "").partition(";")[0].strip().lower()
    if not media_type.startswith("application/") or not media_type.endswith(("/json", "+json")):
        raise FetchError(url, f"response is {media_type or 'untyped'}, not JSON", status=status, permanent=True)
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise FetchError(url, "response is not valid JSON", status=status, permanent=True) from None
    if not isinstance(document, dict):
        raise FetchError(url, "response is JSON but not an object", status=status, permanent=True)
    return document


# --- where connections may go ----------------------------------------------

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NON_PUBLIC_KINDS = (
    ("loopback", "is_loopback"),
    ("unspecified", "is_unspecified"),
    ("link-local", "is_link_local"),
    ("multicast", "is_multicast"),
    ("private", "is_private"),
    ("reserved", "is_reserved"),
)


def non_public_kind(address: IPAddress) -> str | None:
    """Why ``address`` is not fetched ("loopback", "private", …), or None for a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        # An IPv4 address carried inside IPv6 reaches that IPv4 host: judge it.
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
        if embedded is not None:
            address = embedded
    for kind, attribute in _NON_PUBLIC_KINDS:
        if getattr(address, attribute):
            return kind
    # What is left: shared address space (CGNAT, 100.64.0.0/10) and the like.
    return None if address.is_global else "non-public"


def parse_resolve_map(text: str) -> dict[str, tuple[str, int | None]]:
    """``name=address[:port],…`` (IPv6 as ``[::1]:8443``) → {name: (address, port or None)}."""
    pins: dict[str, tuple[str, int | None]] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        name, _, target = entry.partition("=")
        try:
            address, port = _split_address(target.strip())
            ipaddress.ip_address(address)
        except ValueError:
            address = ""
        if not name.strip() or not address:
            raise ConfigError(
                f"resolve entry {entry!r} is not name=address[:port], e.g. alice.test=127.0.0.2:8443"
            )
        pins[name.strip().lower()] = (address, port)
    return pins


def _split_address(target: str) -> tuple[str, int | None]:
    if target.startswith("["):
        address, _, rest = target[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError(f"{rest!r} after the address")
        port_text = rest[1:]
    elif target.count(":") == 1:
        address, _, port_text = target.partition(":")
    else:
        address, port_text = target, ""
    if not port_text:
        return address, None
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range")
    return address, port


class RefusedTarget(Exception):
    """A connection the safety rules forbid, refused before any packet is sent."""


class TargetResolver:
    """Where a connection to a name may go: its pinned address, or its addresses once checked.

    Every client connects to the very addresses this returns (never to the
    name), so a DNS answer that changes between the check and the connect
    cannot slip through.
    """

    def __init__(self, pins: dict[str, tuple[str, int | None]], *, allow_private: bool) -> None:
        self._pins = pins
        self._allow_private = allow_private

    async def addresses(self, host: str, port: int, timeout: float | None) -> list[tuple[str, int]]:
        """The (address, port) pairs to try for ``host:port``, in order.

        Raises `RefusedTarget` when the name has a loopback, private,
        link-local or other non-public address (unless private addresses are
        allowed), TimeoutError when the lookup takes longer than ``timeout``
        seconds, OSError when it fails. Pinned names are not checked: the
        operator chose their addresses.
        """
        pin = self._pins.get(host.lower())
        if pin is not None:
            address, pinned_port = pin
            return [(address, pinned_port or port)]
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout
            )
        except TimeoutError:
            raise TimeoutError(f"looking up {host} timed out") from None
        except OSError as exc:
            raise OSError(f"cannot look up {host}: {exc}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not self._allow_private:
            # One unsafe address refuses the name: a public name has no business
            # pointing into a private network.
            for address in addresses:
                kind = non_public_kind(ipaddress.ip_address(address))
                if kind is None:
                    continue
                where = f"{host} is" if address == host else f"{host} resolves to {address},"
                raise RefusedTarget(f"{where} a {kind} address")
        return [(address, port) for address in addresses]


class _CheckedNetworkBackend(httpcore.AsyncNetworkBackend):
    """Connects to the addresses `TargetResolver` approved for a name.

    httpcore then runs TLS on the returned stream with the URL's name as
    server_hostname, so the certificate is verified for the name while the
    socket goes to the address we approved.
    """

    def __init__(self, resolver: TargetResolver) -> None:
        self._resolver = resolver
        self._sockets = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await self._resolver.addresses(host, port, timeout)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from None
        last_error: httpcore.ConnectError | None = None
        for address, address_port in addresses:
            try:
                return await self._sockets.connect_tcp(address, address_port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                last_error = exc
        raise last_error or httpcore.ConnectError(f"{host} has no address")


class _CheckedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, with a connection pool that uses `_CheckedNetworkBackend`."""

    def __init__(self, ssl_context: ssl.SSLContext, backend: _CheckedNetworkBackend) -> None:
        super().__init__(verify=ssl_context, http1=True, http2=False, limits=_POOL_LIMITS)
        # httpx takes no network backend (encode/httpx#3749 proposes one), so the
        # pool it just built — idle, no connection yet — is swapped for the same
        # pool with ours; the rest of the transport (request and response
        # conversion, exception mapping) is httpx's.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=_POOL_LIMITS.max_connections,
            max_keepalive_connections=_POOL_LIMITS.max_keepalive_connections,
            keepalive_expiry=_POOL_LIMITS.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=backend,
        )


def ssl_context(ca_bundle: str) -> ssl.SSLContext:
    """Trust ``ca_bundle`` (MICROFEDI_CA_BUNDLE or SSL_CERT_FILE) if set, else the system store."""
    try:
        return ssl.create_default_context(cafile=ca_bundle or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"ca_bundle {ca_bundle!r} cannot be loaded: {exc}") from None


@dataclass(frozen=True)
class OutboundRules:
    """DESIGN.md's "Outbound requests and safety" as one client applies them.

    Which URLs may be requested (`checked_url`), where their connections may
    go (`resolver`), which certificates are trusted (`ssl_context`) and how we
    introduce ourselves (`user_agent`).
    """

    allow_http: bool
    resolver: TargetResolver
    ssl_context: ssl.SSLContext
    user_agent: str

    @classmethod
    def from_settings(cls, settings: Settings, *, public_host: str | None = None) -> OutboundRules:
        """The rules of ``settings``; says loudly which safety rules the settings relax.

        ``public_host`` names this install in the User-Agent, as remote admins
        expect. Raises ConfigError for a malformed ``resolve`` or an
        unreadable ``ca_bundle``.
        """
        pins = parse_resolve_map(settings.resolve)
        if settings.allow_http:
            log.warning(
                "MICROFEDI_ALLOW_HTTP is on: plain-http URLs and loopback/private addresses WILL be fetched. "
                "Use it for local development and tests only, never on a server that faces the internet."
            )
        for name, (address, port) in pins.items():
            log.warning("MICROFEDI_RESOLVE sends %s to %s%s", name, address, f" port {port}" if port else "")
        user_agent = f"microfedi/{__version__}"
        if public_host:
            user_agent += f" (+{settings.origin(public_host)}/)"
        return cls(
            allow_http=settings.allow_http,
            resolver=TargetResolver(pins, allow_private=settings.allow_http),
            ssl_context=ssl_context(settings.ca_bundle),
            user_agent=user_agent,
        )

    def checked_url(self, url: str) -> str:
        """``url`` normalised (IDNA host, no fragment), or a permanent FetchError if we never fetch it."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise FetchError(url, f"not a valid URL: {exc}", permanent=True) from None
        if parsed.scheme != "https" and not (parsed.scheme == "http" and self.allow_http):
            refusal = "refused: only https URLs are fetched (MICROFEDI_ALLOW_HTTP permits http)"
            raise FetchError(url, refusal, permanent=True)
        if not parsed.host:
            raise FetchError(url, "URL has no host", permanent=True)
        if parsed.userinfo:
            # Credentials in a URL from a remote document are never ours to send.
            raise FetchError(url, "refused: URL carries credentials", permanent=True)
        return str(parsed.copy_with(fragment=None))
