"""HTTP signatures: signing the requests we send, checking the ones we receive.

Two wire formats are in use between fediverse servers:

* draft-cavage HTTP Signatures (``Signature: keyId="…",algorithm="rsa-sha256",
  headers="(request-target) host date digest",signature="…"``) — what Mastodon
  sends and every server understands, so it is what we sign with;
* RFC 9421 HTTP Message Signatures (``Signature-Input`` + ``Signature``), which
  newer servers send; we verify it, and can sign with it.

Checking a request takes two steps because the key has to be fetched in between::

    signed = parse_signed_request(method, target, headers, body, authority=host)
    key = load_public_key(pem_of(signed.key_id))   # the caller fetches the PEM
    verify_signed_request(signed, key)              # on failure: re-fetch once, retry

``parse_signed_request`` does every check that needs no key (what the signature
covers, the clock, the body digest) and prepares the exact bytes that were signed,
so ``verify_signed_request`` is a single public-key operation and can be repeated
cheaply with a re-fetched key. Every refusal is a ``SignatureError`` whose reason is
short enough to become a 401 body.

Public API::

    SignatureError(reason)
    SignedRequest(key_id, scheme, algorithm, covered, signature, messages)
    body_digest(body) -> str                      # "SHA-256=…"   (Digest header)
    content_digest(body) -> str                   # "sha-256=:…:" (Content-Digest)
    sign_request(method, url, body, key_id, private_key, headers=None, now=None) -> dict
    sign_request_rfc9421(method, url, body, key_id, private_key, headers=None, now=None,
                         *, components=None, label="sig1", expires=None, nonce=None,
                         tag=None) -> dict
    parse_signed_request(method, target, headers, body, *, scheme="https",
                         authority=None, now=None, max_skew=3600) -> SignedRequest
    verify_signed_request(signed, public_key) -> None
    load_public_key(pem) -> PublicKey            # cached by PEM text

Keys are ``cryptography`` objects: RSA, or Ed25519 (``hs2019``/``ed25519``).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import email.utils
import functools
import hashlib
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, Union
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

PublicKey = Union[rsa.RSAPublicKey, ed25519.Ed25519PublicKey]
PrivateKey = Union[rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey]
Headers = Union[Mapping[str, str], Iterable[tuple[str, str]]]

# Algorithm names from the RFC 9421 registry; draft-cavage names map onto them.
RSA_V1_5_SHA256 = "rsa-v1_5-sha256"
RSA_PSS_SHA512 = "rsa-pss-sha512"
ED25519 = "ed25519"

# None means "the key decides" (hs2019, or no algorithm parameter at all).
_CAVAGE_ALGORITHMS: dict[str, str | None] = {
    "rsa-sha256": RSA_V1_5_SHA256,
    "hs2019": None,
    "ed25519": ED25519,
}
_RFC9421_ALGORITHMS = frozenset({RSA_V1_5_SHA256, RSA_PSS_SHA512, ED25519})

_DIGEST_HASHES = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}
_DIGEST_HEADERS = ("digest", "content-digest")
_RFC9421_TARGETS = frozenset({"@target-uri", "@path", "@request-target"})

# Headers the signers compute themselves; a caller's copy would be a duplicate.
_SIGNER_HEADERS = frozenset({"host", "date", "digest", "content-digest", "signature", "signature-input"})


class SignatureError(Exception):
    """A request's signature is missing, malformed, stale or wrong.

    ``reason`` is a short human sentence, suitable as the body of a 401.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SignedRequest:
    """A request that passed every check needing no key, ready to verify.

    ``algorithm`` is an RFC 9421 algorithm name, or None when the key's type
    decides (cavage ``hs2019`` or no algorithm given). ``messages`` are the
    candidate signed bytes, most likely first: a cavage ``(request-target)`` is
    tried with the query string and then without it, since signers disagree.
    """

    key_id: str
    scheme: Literal["cavage", "rfc9421"]
    algorithm: str | None
    covered: tuple[str, ...]
    signature: bytes
    messages: tuple[bytes, ...]


def body_digest(body: bytes) -> str:
    """The ``Digest`` header value for a body, as Mastodon sends it."""
    return "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()


def content_digest(body: bytes) -> str:
    """The RFC 9530 ``Content-Digest`` header value for a body."""
    return "sha-256=" + _serialize_bare(hashlib.sha256(body).digest())


def sign_request(
    method: str,
    url: str,
    body: bytes | None,
    key_id: str,
    private_key: PrivateKey,
    headers: Mapping[str, str] | None = None,
    now: float | None = None,
) -> dict[str, str]:
    """Sign a request the way Mastodon does (draft-cavage).

    Returns every header to send: the caller's ``headers`` plus Host, Date,
    Digest (when there is a body) and Signature, which covers
    ``(request-target) host date`` and ``digest``. RSA keys sign ``rsa-sha256``;
    Ed25519 keys sign ``hs2019``.
    """
    now = time.time() if now is None else now
    digest = {"Digest": body_digest(body)} if body is not None else {}
    out, parts = _prepare_outgoing(method, url, headers, digest, now)
    covered = ["(request-target)", "host", "date"] + (["digest"] if body is not None else [])
    algorithm = _algorithms_for(None, private_key)[0]
    signature = _sign(private_key, algorithm, _cavage_signing_string(parts, covered, {}, parts.target))
    label = "rsa-sha256" if algorithm == RSA_V1_5_SHA256 else "hs2019"
    out["Signature"] = (
        f'keyId="{key_id}",algorithm="{label}",headers="{" ".join(covered)}",'
        f'signature="{base64.b64encode(signature).decode()}"'
    )
    return out


def sign_request_rfc9421(
    method: str,
    url: str,
    body: bytes | None,
    key_id: str,
    private_key: PrivateKey,
    headers: Mapping[str, str] | None = None,
    now: float | None = None,
    *,
    components: Iterable[str] | None = None,
    label: str = "sig1",
    expires: int | None = None,
    nonce: str | None = None,
    tag: str | None = None,
) -> dict[str, str]:
    """Sign a request with RFC 9421 HTTP Message Signatures.

    Returns the caller's ``headers`` plus Host, Date, Content-Digest (when there
    is a body), Signature-Input and Signature. ``components`` defaults to
    ``@method @target-uri`` and ``content-digest`` when there is a body; header
    components are read from the returned headers. The algorithm follows the
    key (``rsa-v1_5-sha256`` or ``ed25519``) and is named in ``alg``.
    """
    now = time.time() if now is None else now
    digest = {"Content-Digest": content_digest(body)} if body is not None else {}
    out, parts = _prepare_outgoing(method, url, headers, digest, now)
    if components is None:
        components = ["@method", "@target-uri"] + (["content-digest"] if body is not None else [])
    algorithm = _algorithms_for(None, private_key)[0]
    # created;alg;keyid is the order apsig's verifier rebuilds; any order is valid.
    params: dict[str, object] = {"created": int(now), "alg": algorithm, "keyid": key_id}
    optional = {"expires": expires, "nonce": nonce, "tag": tag}
    params.update({name: value for name, value in optional.items() if value is not None})
    names = [(name, {}) for name in components]
    signature = _sign(private_key, algorithm, _signature_base(parts, names, params))
    out["Signature-Input"] = f"{label}={_serialize_inner_list(names, params)}"
    out["Signature"] = f"{label}={_serialize_bare(signature)}"
    return out


def parse_signed_request(
    method: str,
    target: str,
    headers: Headers,
    body: bytes,
    *,
    scheme: str = "https",
    authority: str | None = None,
    now: float | None = None,
    max_skew: int = 3600,
) -> SignedRequest:
    """Check a received request's signature as far as possible without the key.

    ``target`` is the request target as received (raw path plus ``?query``);
    ``headers`` a mapping or a list of pairs (repeated names are joined with
    ", "); ``scheme`` and ``authority`` rebuild ``@target-uri``/``@authority``
    (authority defaults to the Host header). Raises ``SignatureError`` for no or
    malformed signature, a signature not covering the target, the time (Date or
    created) or the body digest, a time more than ``max_skew`` seconds off, an
    expired signature, or a digest that does not match the body.
    """
    now = time.time() if now is None else now
    parts = _RequestParts(method, scheme.lower(), authority, target, _header_table(headers))
    if "signature-input" in parts.headers:
        return _parse_rfc9421(parts, body, now, max_skew)
    value = parts.headers.get("signature")
    if value is None:
        auth_scheme, _, credentials = parts.headers.get("authorization", "").partition(" ")
        if auth_scheme.lower() == "signature":
            value = credentials
    if not value:
        raise SignatureError("request is not signed")
    return _parse_cavage(parts, value, body, now, max_skew)


def verify_signed_request(signed: SignedRequest, public_key: PublicKey) -> None:
    """Check the signature itself; raises ``SignatureError`` if it does not verify."""
    for algorithm in _algorithms_for(signed.algorithm, public_key):
        for message in signed.messages:
            try:
                _verify(public_key, algorithm, signed.signature, message)
            except InvalidSignature:
                continue
            return
    raise SignatureError("signature does not verify")


@functools.lru_cache(maxsize=1024)
def load_public_key(pem: str) -> PublicKey:
    """Load a PEM public key, once per distinct PEM text (parsing costs)."""
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, UnsupportedAlgorithm):
        raise SignatureError("public key is not a readable PEM key") from None
    if not isinstance(key, (rsa.RSAPublicKey, ed25519.Ed25519PublicKey)):
        raise SignatureError("public key type is not supported")
    return key


# --- the request, as both signers and verifiers see it ---------------------


@dataclass(frozen=True)
class _RequestParts:
    method: str
    scheme: str
    authority: str | None  # None: take it from the Host header
    target: str  # path plus "?query" as sent
    headers: dict[str, str]  # lower-case name -> values joined with ", "

    def header(self, name: str) -> str:
        try:
            return self.headers[name.lower()]
        except KeyError:
            raise SignatureError(f"signed header {name} is missing") from None

    def component(self, name: str) -> str:
        """An RFC 9421 component value (section 2.2 for the derived ones)."""
        if not name.startswith("@"):
            return self.header(name)
        path, _, query = self.target.partition("?")
        match name:
            case "@method":
                return self.method
            case "@target-uri":
                return f"{self.scheme}://{self._authority()}{self.target}"
            case "@authority":
                return self._authority()
            case "@scheme":
                return self.scheme
            case "@request-target":
                return self.target
            case "@path":
                return path or "/"
            case "@query":
                return "?" + query
        raise SignatureError(f"signature component {name} is not supported")

    def _authority(self) -> str:
        authority = self.authority or self.headers.get("host")
        if not authority:
            raise SignatureError("request has no Host to check @authority against")
        return authority.lower()


def _header_table(headers: Headers) -> dict[str, str]:
    values: dict[str, list[str]] = {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in pairs:
        values.setdefault(name.lower(), []).append(value.strip())
    return {name: ", ".join(joined) for name, joined in values.items()}


def _prepare_outgoing(
    method: str, url: str, headers: Mapping[str, str] | None, digest: dict[str, str], now: float
) -> tuple[dict[str, str], _RequestParts]:
    """The headers to send (caller's, Host, Date, digest) and the parts to sign from."""
    split = urlsplit(url)
    host = split.netloc.lower()
    # HTTP clients leave the default port out of Host; sign what they will send.
    default_port = {"https": ":443", "http": ":80"}.get(split.scheme)
    if default_port and host.endswith(default_port):
        host = host[: -len(default_port)]
    target = (split.path or "/") + (f"?{split.query}" if split.query else "")
    out = {name: value for name, value in (headers or {}).items() if name.lower() not in _SIGNER_HEADERS}
    out["Host"] = host
    out["Date"] = email.utils.formatdate(now, usegmt=True)
    out.update(digest)
    return out, _RequestParts(method.upper(), split.scheme, host, target, _header_table(out))


# --- draft-cavage -----------------------------------------------------------

# One `name="value"` or `name=value` parameter and the comma after it.
_CAVAGE_PARAM = re.compile(r'\s*([A-Za-z]+)\s*=\s*(?:"([^"]*)"|([^\s,"]*))\s*(?:,|$)')


def _parse_cavage(parts: _RequestParts, value: str, body: bytes, now: float, max_skew: int) -> SignedRequest:
    params = _parse_cavage_params(value)
    key_id, encoded = params.get("keyId"), params.get("signature")
    if not key_id or not encoded:
        raise SignatureError("signature lacks keyId or signature")
    algorithm_name = params.get("algorithm", "hs2019").lower()
    if algorithm_name not in _CAVAGE_ALGORITHMS:
        raise SignatureError(f"signature algorithm {algorithm_name} is not supported")
    # Without a headers parameter only Date is signed (Mastodon's reading of the draft).
    covered = params.get("headers", "date").lower().split()
    if "(request-target)" not in covered:
        raise SignatureError("signature does not cover (request-target)")
    _check_body_digests(parts, covered, body)
    _check_times(
        parts,
        date_covered="date" in covered,
        created=_cavage_time(params, "created") if "(created)" in covered else None,
        expires=_cavage_time(params, "expires") if "(expires)" in covered else None,
        now=now,
        max_skew=max_skew,
    )
    targets = [parts.target]
    if "?" in parts.target:
        targets.append(parts.target.partition("?")[0])
    try:
        signature = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise SignatureError("signature is not valid base64") from None
    return SignedRequest(
        key_id=key_id,
        scheme="cavage",
        algorithm=_CAVAGE_ALGORITHMS[algorithm_name],
        covered=tuple(covered),
        signature=signature,
        messages=tuple(_cavage_signing_string(parts, covered, params, target) for target in targets),
    )


def _parse_cavage_params(value: str) -> dict[str, str]:
    params: dict[str, str] = {}
    position = 0
    while position < len(value.rstrip()):
        match = _CAVAGE_PARAM.match(value, position)
        if match is None or match.end() == position:
            raise SignatureError("malformed Signature header")
        params[match[1]] = match[2] if match[2] is not None else match[3]
        position = match.end()
    return params


def _cavage_time(params: dict[str, str], name: str) -> float:
    try:
        return float(params[name])
    except (KeyError, ValueError):
        raise SignatureError(f"signature covers ({name}) without a valid {name} parameter") from None


def _cavage_signing_string(parts: _RequestParts, covered: list[str], params: dict[str, str], target: str) -> bytes:
    lines = []
    for name in covered:
        if name == "(request-target)":
            value = f"{parts.method.lower()} {target}"
        elif name in ("(created)", "(expires)"):
            value = params[name[1:-1]]
        else:
            value = parts.header(name)
        lines.append(f"{name}: {value}")
    return "\n".join(lines).encode()


# --- RFC 9421 ----------------------------------------------------------------


def _parse_rfc9421(parts: _RequestParts, body: bytes, now: float, max_skew: int) -> SignedRequest:
    try:
        inputs = _parse_sf_dictionary(parts.headers["signature-input"])
        signatures = _parse_sf_dictionary(parts.headers.get("signature", ""))
    except ValueError as error:
        raise SignatureError(f"malformed Signature-Input or Signature: {error}") from None
    # A request may carry several signatures; the first one with a value is checked.
    label = next((label for label in inputs if label in signatures), None)
    if label is None:
        raise SignatureError("Signature-Input has no matching Signature")
    members, params = inputs[label]
    signature = signatures[label][0]
    if not isinstance(members, list) or not isinstance(signature, bytes):
        raise SignatureError("malformed Signature-Input or Signature")
    components = _covered_components(members)
    key_id, algorithm = params.get("keyid"), params.get("alg")
    if not isinstance(key_id, str) or not key_id:
        raise SignatureError("signature has no keyid")
    if algorithm is not None and algorithm not in _RFC9421_ALGORITHMS:
        raise SignatureError(f"signature algorithm {algorithm} is not supported")
    if "@method" not in components or _RFC9421_TARGETS.isdisjoint(components):
        raise SignatureError("signature does not cover the method and target")
    _check_body_digests(parts, components, body)
    _check_times(
        parts,
        date_covered="date" in components,
        created=_sf_time(params, "created"),
        expires=_sf_time(params, "expires"),
        now=now,
        max_skew=max_skew,
    )
    return SignedRequest(
        key_id=key_id,
        scheme="rfc9421",
        algorithm=None if algorithm is None else str(algorithm),
        covered=tuple(components),
        signature=signature,
        messages=(_signature_base(parts, members, params),),
    )


def _covered_components(members: list[tuple[object, dict[str, object]]]) -> list[str]:
    components: list[str] = []
    for name, component_params in members:
        if not isinstance(name, str) or isinstance(name, _Token):
            raise SignatureError("malformed Signature-Input: components must be strings")
        if component_params:
            raise SignatureError(f"component parameters on {name} are not supported")
        if name in components or name == "@signature-params":
            raise SignatureError(f"signature lists {name} more than once or out of place")
        components.append(name)
    return components


def _sf_time(params: dict[str, object], name: str) -> float | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise SignatureError(f"signature parameter {name} is not an integer")
    return float(value)


def _signature_base(parts: _RequestParts, members: list[tuple[str, dict]], params: dict[str, object]) -> bytes:
    """The signature base of RFC 9421 section 2.5: one line per component, then the params."""
    lines = [f"{_serialize_bare(name)}: {parts.component(name)}" for name, _ in members]
    lines.append(f'"@signature-params": {_serialize_inner_list(members, params)}')
    return "\n".join(lines).encode()


# --- checks shared by both formats -------------------------------------------


def _check_body_digests(parts: _RequestParts, covered: Iterable[str], body: bytes) -> None:
    """A body must be covered by a signed digest, and every signed digest must match it.

    An unsigned digest header proves nothing, so it is not looked at.
    """
    signed = [name for name in _DIGEST_HEADERS if name in covered]
    if body and not signed:
        raise SignatureError("signature does not cover the body digest")
    for name in signed:
        value = parts.header(name)
        claims = _legacy_digest_claims(value) if name == "digest" else _content_digest_claims(value)
        checked = False
        for algorithm, claimed in claims:
            hash_function = _DIGEST_HASHES.get(algorithm.lower())
            if hash_function is None:
                continue
            if claimed != hash_function(body).digest():
                raise SignatureError(f"{name} does not match the body")
            checked = True
        if not checked:
            raise SignatureError(f"{name} has no supported algorithm")


def _legacy_digest_claims(value: str) -> list[tuple[str, bytes | None]]:
    """RFC 3230 ``Digest: SHA-256=<base64>, SHA-512=<base64>`` (names in any case)."""
    claims: list[tuple[str, bytes | None]] = []
    for entry in value.split(","):
        algorithm, _, encoded = entry.strip().partition("=")
        try:
            claims.append((algorithm, base64.b64decode(encoded, validate=True)))
        except binascii.Error:
            claims.append((algorithm, None))
    return claims


def _content_digest_claims(value: str) -> list[tuple[str, object]]:
    """RFC 9530 ``Content-Digest: sha-256=:<base64>:``."""
    try:
        return [(algorithm, member[0]) for algorithm, member in _parse_sf_dictionary(value).items()]
    except ValueError:
        raise SignatureError("malformed Content-Digest") from None


def _check_times(
    parts: _RequestParts,
    *,
    date_covered: bool,
    created: float | None,
    expires: float | None,
    now: float,
    max_skew: int,
) -> None:
    """Refuse replays: a signed time must be near now, and an expiry not past."""
    if created is None and not date_covered:
        raise SignatureError("signature covers neither date nor created")
    if expires is not None and expires < now:
        raise SignatureError("signature has expired")
    if created is not None:
        _check_clock("created", created, now, max_skew)
    if date_covered:
        _check_clock("Date", _parse_http_date(parts.header("date")), now, max_skew)


def _check_clock(name: str, moment: float, now: float, max_skew: int) -> None:
    if moment > now + max_skew:
        raise SignatureError(f"{name} is in the future")
    if moment < now - max_skew:
        raise SignatureError(f"{name} is too old")


def _parse_http_date(value: str) -> float:
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        raise SignatureError("Date header is not a date") from None
    if moment.tzinfo is None:  # "-0000" means UTC with no zone given
        return moment.replace(tzinfo=datetime.timezone.utc).timestamp()
    return moment.timestamp()


# --- cryptography --------------------------------------------------------------


def _algorithms_for(declared: str | None, key: PublicKey | PrivateKey) -> tuple[str, ...]:
    """The algorithms to try with ``key``: the declared one, or all its type allows."""
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        # PKCS#1 v1.5 first: it is what the fediverse uses; PSS is RFC 9421's other RSA.
        allowed: tuple[str, ...] = (RSA_V1_5_SHA256, RSA_PSS_SHA512)
    elif isinstance(key, (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey)):
        allowed = (ED25519,)
    else:
        raise SignatureError("key type is not supported")
    if declared is None:
        return allowed
    if declared not in allowed:
        raise SignatureError(f"key does not fit signature algorithm {declared}")
    return (declared,)


def _pss() -> padding.PSS:
    # RFC 9421 section 3.3.1: MGF1 with SHA-512 and a 64-byte salt.
    return padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=64)


def _sign(key: PrivateKey, algorithm: str, message: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    if algorithm == RSA_PSS_SHA512:
        return key.sign(message, _pss(), hashes.SHA512())
    return key.sign(message, padding.PKCS1v15(), hashes.SHA256())


def _verify(key: PublicKey, algorithm: str, signature: bytes, message: bytes) -> None:
    """Raises ``InvalidSignature`` when the signature does not match."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        key.verify(signature, message)
    elif algorithm == RSA_PSS_SHA512:
        key.verify(signature, message, _pss(), hashes.SHA512())
    else:
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())


# --- RFC 8941 structured fields: the subset signatures and digests use -----------


class _Token(str):
    """A structured-field token: kept apart from strings so it serializes unquoted."""


_SF_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_SF_TOKEN = re.compile(r"[A-Za-z*][A-Za-z0-9!#$%&'*+\-.^_`|~:/]*")
_SF_INTEGER = re.compile(r"-?[0-9]{1,15}")
_SF_BYTES = re.compile(r":([A-Za-z0-9+/=]*):")


def _parse_sf_dictionary(text: str) -> dict[str, tuple[object, dict[str, object]]]:
    """Parse an RFC 8941 dictionary; members are (item or inner list, parameters).

    Raises ValueError on anything malformed, or on decimals, which no signature
    or digest field uses.
    """
    parser = _SFParser(text)
    members: dict[str, tuple[object, dict[str, object]]] = {}
    while not parser.at_end():
        key = parser.expect(_SF_KEY, "key")
        if parser.take("="):
            members[key] = parser.item_or_inner_list()
        else:
            members[key] = (True, parser.parameters())
        parser.skip(" \t")
        if parser.at_end():
            break
        if not parser.take(","):
            raise ValueError(f"expected ',' at {parser.position}")
        parser.skip(" \t")
        if parser.at_end():
            raise ValueError("trailing comma")
    return members


class _SFParser:
    def __init__(self, text: str) -> None:
        self.text = text.strip(" ")
        self.position = 0

    def at_end(self) -> bool:
        return self.position >= len(self.text)

    def peek(self) -> str:
        return self.text[self.position : self.position + 1]

    def take(self, char: str) -> bool:
        if self.peek() == char:
            self.position += 1
            return True
        return False

    def skip(self, chars: str) -> None:
        while not self.at_end() and self.text[self.position] in chars:
            self.position += 1

    def expect(self, pattern: re.Pattern[str], what: str) -> str:
        match = pattern.match(self.text, self.position)
        if match is None:
            raise ValueError(f"expected {what} at {self.position}")
        self.position = match.end()
        return match[0]

    def item_or_inner_list(self) -> tuple[object, dict[str, object]]:
        if not self.take("("):
            return self.bare_item(), self.parameters()
        items: list[tuple[object, dict[str, object]]] = []
        while True:
            self.skip(" ")
            if self.take(")"):
                return items, self.parameters()
            items.append((self.bare_item(), self.parameters()))
            if self.peek() not in (" ", ")"):
                raise ValueError(f"expected ' ' or ')' at {self.position}")

    def parameters(self) -> dict[str, object]:
        params: dict[str, object] = {}
        while self.take(";"):
            self.skip(" ")
            key = self.expect(_SF_KEY, "parameter name")
            params[key] = self.bare_item() if self.take("=") else True
        return params

    def bare_item(self) -> object:
        char = self.peek()
        if char == '"':
            return self.string()
        if char == ":":
            encoded = _SF_BYTES.match(self.text, self.position)
            if encoded is None:
                raise ValueError(f"bad byte sequence at {self.position}")
            self.position = encoded.end()
            try:
                return base64.b64decode(encoded[1], validate=True)
            except binascii.Error:
                raise ValueError("bad base64 in byte sequence") from None
        if char == "?":
            value = self.text[self.position + 1 : self.position + 2]
            if value not in ("0", "1"):
                raise ValueError(f"bad boolean at {self.position}")
            self.position += 2
            return value == "1"
        if char == "-" or char.isdigit():
            number = self.expect(_SF_INTEGER, "integer")
            if self.peek() == ".":
                raise ValueError("decimals are not supported")
            return int(number)
        return _Token(self.expect(_SF_TOKEN, "item"))

    def string(self) -> str:
        self.position += 1  # the opening quote
        chars: list[str] = []
        while not self.at_end():
            char = self.text[self.position]
            self.position += 1
            if char == "\\":
                escaped = self.peek()
                if escaped not in ('"', "\\"):
                    raise ValueError(f"bad escape at {self.position}")
                chars.append(escaped)
                self.position += 1
            elif char == '"':
                return "".join(chars)
            elif not " " <= char <= "~":
                raise ValueError(f"bad character in string at {self.position}")
            else:
                chars.append(char)
        raise ValueError("unterminated string")


def _serialize_bare(value: object) -> str:
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, _Token):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bytes):
        return ":" + base64.b64encode(value).decode() + ":"
    raise TypeError(f"cannot serialize {value!r} as a structured field")


def _serialize_params(params: dict[str, object]) -> str:
    return "".join(
        f";{name}" if value is True else f";{name}={_serialize_bare(value)}" for name, value in params.items()
    )


def _serialize_inner_list(items: list[tuple[object, dict]], params: dict[str, object]) -> str:
    inner = " ".join(_serialize_bare(value) + _serialize_params(item_params) for value, item_params in items)
    return f"({inner}){_serialize_params(params)}"
