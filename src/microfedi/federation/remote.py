"""Remote actors: fetched with a signed GET, validated, cached, and found by key or handle.

Validation follows what Mastodon checks: the document's `id` is the URL we
fetched (or, fetched again at its own `id`, says so); the key's `owner` is the
actor and lives on the actor's host; a WebFinger handle is trusted only after
the round trip (the actor's host names the handle, and the handle's domain
points back at the same actor).
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import quote, urldefrag, urlsplit

from microfedi.errors import ActionError
from microfedi.federation.activities import ACTOR_TYPES, id_of, type_of
from microfedi.federation.http import FetchError
from microfedi.store import federation as fq
from microfedi.store.federation import RemoteActor

# A cached actor older than this is fetched again when it is needed.
ACTOR_TTL = 24 * 3600
_HANDLE = re.compile(r"^@?([^@\s/]+)@([^@\s/]+)$")


class RemoteError(Exception):
    """A remote actor or key could not be fetched or did not validate."""

    def __init__(self, reason: str, *, permanent: bool = True, gone: bool = False, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.gone = gone
        self.status = status


def host_of_url(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def _text(value: Any, limit: int = 5000) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _image_url(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, dict):
        value = value.get("url")
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, dict):
            value = value.get("href")
    return value if isinstance(value, str) and value.startswith(("https://", "http://")) else None


def _pick_key(doc: dict[str, Any], key_id: str | None) -> dict[str, Any] | None:
    keys = doc.get("publicKey")
    candidates = keys if isinstance(keys, list) else [keys]
    candidates = [k for k in candidates if isinstance(k, dict) and isinstance(k.get("publicKeyPem"), str)]
    if key_id is not None:
        candidates = [k for k in candidates if k.get("id") == key_id]
    return candidates[0] if candidates else None


def actor_fields(doc: dict[str, Any], key_id: str | None = None) -> dict[str, Any]:
    """Validated fields of an actor document, or RemoteError saying what is wrong."""
    uri = doc.get("id")
    if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
        raise RemoteError("actor has no http(s) id")
    kind = type_of(doc)
    if kind not in ACTOR_TYPES:
        raise RemoteError(f"{uri} is a {kind or 'thing without type'}, not an actor")
    host = host_of_url(uri)
    inbox = id_of(doc.get("inbox"))
    if not inbox or host_of_url(inbox) != host:
        raise RemoteError(f"{uri} has no inbox on its own host")
    username = doc.get("preferredUsername")
    if not isinstance(username, str) or not username:
        username = uri.rstrip("/").rsplit("/", 1)[-1].lstrip("@")
    key = _pick_key(doc, key_id)
    if key is not None:
        if id_of(key.get("owner")) != uri:
            raise RemoteError(f"the key of {uri} is owned by someone else")
        if not isinstance(key.get("id"), str) or host_of_url(key["id"]) != host:
            raise RemoteError(f"the key of {uri} lives on another host")
    endpoints = doc.get("endpoints") if isinstance(doc.get("endpoints"), dict) else {}
    shared = id_of(endpoints.get("sharedInbox"))
    aka = doc.get("alsoKnownAs")
    return {
        "host": host,
        "type": kind,
        "username": username[:255],
        "name": _text(doc.get("name"), 500),
        "summary": _text(doc.get("summary")),
        "url": id_of(doc.get("url")) if isinstance(doc.get("url"), (str, dict)) else None,
        "inbox": inbox,
        "shared_inbox": shared if shared and host_of_url(shared) == host else None,
        "outbox": id_of(doc.get("outbox")),
        "followers": id_of(doc.get("followers")),
        "following": id_of(doc.get("following")),
        "icon_url": _image_url(doc.get("icon")),
        "header_url": _image_url(doc.get("image")),
        "key_id": key["id"] if key else None,
        "public_key_pem": key["publicKeyPem"] if key else None,
        "manually_approves": doc.get("manuallyApprovesFollowers") is True,
        "also_known_as": [a for a in (aka if isinstance(aka, list) else [aka]) if isinstance(a, str)][:20],
        "moved_to": id_of(doc.get("movedTo")),
    }


async def _get(instance: Any, url: str, signer_host: str | None) -> dict[str, Any]:
    """A document from `url`, which must not have been redirected to another host.

    A document speaks for the host that served it: if other.example redirects
    to evil.example, what evil.example says about other.example's ids counts
    for nothing (the pattern of Mastodon's CVE-2024-23832).
    """
    try:
        final_url, doc = await instance.http.get_json(url, signer=await instance.instance_signer(signer_host))
    except FetchError as exc:
        raise RemoteError(
            f"fetching {url} failed: {exc}", permanent=exc.permanent, gone=exc.status == 410, status=exc.status
        ) from None
    if host_of_url(final_url) != host_of_url(url):
        raise RemoteError(f"{url} redirected to another host ({host_of_url(final_url)})")
    return doc


async def fetch_authoritative(instance: Any, url: str, signer_host: str | None = None) -> dict[str, Any]:
    """Fetch `url`; if the document names another id, fetch that id and require it to agree."""
    url = urldefrag(url).url
    doc = await _get(instance, url, signer_host)
    doc_id = doc.get("id")
    if doc_id == url:
        return doc
    if not isinstance(doc_id, str) or host_of_url(doc_id) != host_of_url(url):
        raise RemoteError(f"{url} answered with a document whose id is {doc_id!r}")
    doc = await _get(instance, doc_id, signer_host)
    if doc.get("id") != doc_id:
        raise RemoteError(f"{doc_id} does not claim its own id")
    return doc


async def fetch_actor(instance: Any, uri: str, *, signer_host: str | None = None, acct_domain: str | None = None) -> RemoteActor:
    """Fetch, validate and store a remote actor (always over the network)."""
    doc = await fetch_authoritative(instance, uri, signer_host)
    fields = actor_fields(doc)
    return await instance.db.write(fq.upsert_remote_actor, doc["id"], fields, acct_domain)


async def get_actor(instance: Any, uri: str, *, signer_host: str | None = None, max_age: float = ACTOR_TTL) -> RemoteActor:
    """A remote actor from the cache, fetched again when missing or older than `max_age`."""
    cached = await instance.db.read(fq.get_remote_actor, uri)
    if cached is not None and cached.deleted_at is None and cached.fetched_at > time.time() - max_age:
        return cached
    return await fetch_actor(instance, uri, signer_host=signer_host)


class KeyCache:
    """Signing keys recently seen, so a busy inbox does not read the database per POST.

    Entries live a few minutes; a key that fails to verify is fetched again
    anyway (refresh), which replaces its entry.
    """

    def __init__(self, ttl: float = 300.0, size: int = 10_000) -> None:
        self.ttl, self.size = ttl, size
        self._entries: dict[str, tuple[float, RemoteActor]] = {}

    def get(self, key_id: str) -> RemoteActor | None:
        entry = self._entries.get(key_id)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key_id: str, actor: RemoteActor) -> RemoteActor:
        if len(self._entries) >= self.size:
            self._entries.clear()  # rare; simpler and cheaper than tracking order
        self._entries[key_id] = (time.monotonic() + self.ttl, actor)
        return actor


async def actor_for_key(instance: Any, key_id: str, *, signer_host: str | None = None, refresh: bool = False) -> RemoteActor:
    """The actor owning `key_id`, with that key; fetched when unknown or when `refresh`."""
    if not refresh:
        cached = instance.keys.get(key_id) or await instance.db.read(fq.find_remote_actor_by_key, key_id)
        if cached is not None:
            return instance.keys.put(key_id, cached)
    doc = await fetch_authoritative(instance, key_id, signer_host)
    if type_of(doc) not in ACTOR_TYPES:
        # A standalone key document: {id, owner, publicKeyPem}; fetch its owner.
        owner = id_of(doc.get("owner"))
        if not owner or host_of_url(owner) != host_of_url(key_id):
            raise RemoteError(f"key {key_id} has no owner on its own host")
        doc = await fetch_authoritative(instance, owner, signer_host)
    fields = actor_fields(doc, key_id)
    if fields["key_id"] != key_id:
        raise RemoteError(f"{doc.get('id')} does not list the key {key_id}")
    return instance.keys.put(key_id, await instance.db.write(fq.upsert_remote_actor, doc["id"], fields, None))


async def webfinger(instance: Any, username: str, domain: str) -> tuple[str, str]:
    """(subject, actor URI) from `domain`'s WebFinger for acct:username@domain."""
    resource = quote(f"acct:{username}@{domain}", safe=":@")
    # Plain http is tried only where the operator allowed it (local peers).
    schemes = ("https", "http") if instance.settings.allow_http else ("https",)
    for scheme in schemes:
        url = f"{scheme}://{domain}/.well-known/webfinger?resource={resource}"
        try:
            _, jrd = await instance.http.get_json(url, signer=None, accept="application/jrd+json, application/json")
            break
        except FetchError as exc:
            if exc.status == 404:
                raise RemoteError(f"{username}@{domain} does not exist") from None
            if scheme == schemes[-1]:
                raise RemoteError(f"WebFinger at {domain} failed: {exc}", permanent=exc.permanent) from None
    subject = jrd.get("subject")
    links = jrd.get("links") if isinstance(jrd.get("links"), list) else []
    for link in links:
        if not isinstance(link, dict) or link.get("rel") != "self":
            continue
        media = str(link.get("type", ""))
        if "activity+json" in media or "ld+json" in media:
            href = link.get("href")
            if isinstance(href, str):
                return (subject if isinstance(subject, str) else f"acct:{username}@{domain}"), href
    raise RemoteError(f"{username}@{domain} has no ActivityPub actor")


def parse_acct(subject: str) -> tuple[str, str] | None:
    match = _HANDLE.match(subject.removeprefix("acct:"))
    return (match.group(1).lower(), match.group(2).lower()) if match else None


async def resolve_handle(instance: Any, handle: str, *, signer_host: str | None = None) -> RemoteActor:
    """Find a remote actor by `user@domain`, doing Mastodon's WebFinger round trip.

    The handle's domain names an actor; the actor's own host must name the same
    handle (split domains: `acct:preferredUsername@host` answers with subject
    `acct:user@domain`), and that subject's domain must point back at the actor.
    """
    parsed = parse_acct(handle.strip())
    if parsed is None:
        raise ActionError(f"{handle!r} is not a handle; write it as user@domain")
    username, domain = parsed
    cached = await instance.db.read(fq.find_remote_actor_by_handle, username, domain)
    if cached is not None and cached.fetched_at > time.time() - ACTOR_TTL:
        return cached
    try:
        _, actor_uri = await webfinger(instance, username, domain)
        doc = await fetch_authoritative(instance, actor_uri, signer_host)
        fields = actor_fields(doc)
        canonical = await _confirm_handle(instance, doc["id"], fields["username"], fields["host"])
    except RemoteError as exc:
        raise ActionError(f"cannot find {username}@{domain}: {exc.reason}", status=404) from None
    return await instance.db.write(fq.upsert_remote_actor, doc["id"], fields, canonical[1])


async def _confirm_handle(instance: Any, actor_uri: str, username: str, host: str) -> tuple[str, str]:
    """The verified (user, domain) handle of an actor, by the WebFinger round trip."""
    subject, href = await webfinger(instance, username, host)
    if href != actor_uri:
        raise RemoteError(f"{host} does not confirm {actor_uri} as {username}@{host}")
    canonical = parse_acct(subject) or (username, host)
    if canonical != (username, host):
        _, href = await webfinger(instance, *canonical)
        if href != actor_uri:
            raise RemoteError(f"{canonical[1]} does not point back at {actor_uri}")
    return canonical


async def resolve(instance: Any, reference: str, *, signer_host: str | None = None) -> RemoteActor:
    """A remote actor from a handle (`user@domain`) or an actor URL."""
    reference = reference.strip()
    if reference.startswith(("https://", "http://")):
        try:
            return await get_actor(instance, reference, signer_host=signer_host)
        except RemoteError as exc:
            raise ActionError(f"cannot fetch {reference}: {exc.reason}", status=404) from None
    return await resolve_handle(instance, reference, signer_host=signer_host)
