"""ActivityStreams documents for local actors, the instance actor and collections."""

from __future__ import annotations

import html
from datetime import datetime, timezone
from typing import Any

from microfedi import __version__
from microfedi.store.directory import AccountRow
from microfedi.urls import Urls

AS_CONTEXT = "https://www.w3.org/ns/activitystreams"
SECURITY_CONTEXT = "https://w3id.org/security/v1"
ACTOR_CONTEXT: list[Any] = [
    AS_CONTEXT,
    SECURITY_CONTEXT,
    {
        "manuallyApprovesFollowers": "as:manuallyApprovesFollowers",
        "alsoKnownAs": {"@id": "as:alsoKnownAs", "@type": "@id"},
        "movedTo": {"@id": "as:movedTo", "@type": "@id"},
        "toot": "http://joinmastodon.org/ns#",
        "discoverable": "toot:discoverable",
        "indexable": "toot:indexable",
        "featured": {"@id": "toot:featured", "@type": "@id"},
        "schema": "http://schema.org#",
        "PropertyValue": "schema:PropertyValue",
        "value": "schema:value",
        "webfinger": "https://purl.archive.org/socialweb/webfinger#webfinger",
    },
]
DEFAULT_AVATAR_PATH = "/static/avatar.png"
DEFAULT_HEADER_PATH = "/static/header.png"


def iso_time(timestamp: float) -> str:
    """RFC 3339 UTC time with a Z, as Mastodon writes it."""
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _image(url: str) -> dict[str, str]:
    media_type = "image/png" if url.endswith(".png") else "image/jpeg"
    return {"type": "Image", "mediaType": media_type, "url": url}


def local_actor(account: AccountRow, urls: Urls) -> dict[str, Any]:
    """The Person document served at the account's actor URL."""
    actor_id = urls.actor(account)
    origin = urls.origin(account.host)
    return {
        "@context": ACTOR_CONTEXT,
        "id": actor_id,
        "type": "Person",
        "preferredUsername": account.username,
        "name": account.display_name or account.username,
        "summary": account.summary,
        "url": actor_id,
        "inbox": urls.inbox(account),
        "outbox": urls.outbox(account),
        "followers": urls.followers(account),
        "following": urls.following(account),
        "featured": urls.featured(account),
        "endpoints": {"sharedInbox": urls.shared_inbox(account.host)},
        "publicKey": {
            "id": urls.key_id(account),
            "owner": actor_id,
            "publicKeyPem": account.public_key_pem,
        },
        "manuallyApprovesFollowers": account.locked,
        "discoverable": account.discoverable,
        "indexable": account.discoverable,
        "published": iso_time(account.created_at),
        "alsoKnownAs": list(account.also_known_as),
        "attachment": [
            {"type": "PropertyValue", "name": name, "value": value} for name, value in account.fields
        ],
        "icon": _image(account.avatar_url or origin + DEFAULT_AVATAR_PATH),
        "image": _image(account.header_url or origin + DEFAULT_HEADER_PATH),
        "webfinger": account.handle,
        **({"movedTo": account.moved_to} if account.moved_to else {}),
    }


def instance_actor(host: str, public_key_pem: str, urls: Urls) -> dict[str, Any]:
    """The Application actor of a URL host; it signs our outgoing GETs."""
    actor_id = urls.instance_actor(host)
    return {
        "@context": ACTOR_CONTEXT,
        "id": actor_id,
        "type": "Application",
        "preferredUsername": host,
        "name": f"{host} (microfedi {__version__})",
        "summary": f"<p>The service actor of {html.escape(host)}; it signs this server's requests.</p>",
        "url": urls.origin(host) + "/about",
        "inbox": actor_id + "/inbox",
        "outbox": actor_id + "/outbox",
        "endpoints": {"sharedInbox": urls.shared_inbox(host)},
        "publicKey": {"id": urls.instance_key_id(host), "owner": actor_id, "publicKeyPem": public_key_pem},
        "manuallyApprovesFollowers": True,
        "discoverable": False,
        "webfinger": f"{host}@{host}",
    }


def gone_actor(account: AccountRow, urls: Urls) -> dict[str, Any]:
    """What a removed account's URL answers (with 410 Gone)."""
    return {
        "@context": AS_CONTEXT,
        "id": urls.actor(account),
        "type": "Tombstone",
        "formerType": "Person",
        "deleted": iso_time(account.deleted_at or account.updated_at),
    }


def ordered_collection(collection_id: str, items: list[Any], total: int | None = None) -> dict[str, Any]:
    """A single-page OrderedCollection, for lists that stay short."""
    return {
        "@context": AS_CONTEXT,
        "id": collection_id,
        "type": "OrderedCollection",
        "totalItems": len(items) if total is None else total,
        "orderedItems": items,
    }


def paged_collection(collection_id: str, total: int, first: str | None = None) -> dict[str, Any]:
    """The head of a paged OrderedCollection: the total and a link to the first page."""
    head: dict[str, Any] = {
        "@context": AS_CONTEXT,
        "id": collection_id,
        "type": "OrderedCollection",
        "totalItems": total,
    }
    if total:
        head["first"] = first or f"{collection_id}?page=1"
    return head


def cursor_page(page_id: str, collection_id: str, items: list[Any], next_page: str | None) -> dict[str, Any]:
    """A page of a collection paged by cursor (max_id) rather than number."""
    doc: dict[str, Any] = {
        "@context": AS_CONTEXT,
        "id": page_id,
        "type": "OrderedCollectionPage",
        "partOf": collection_id,
        "orderedItems": items,
    }
    if next_page:
        doc["next"] = next_page
    return doc


def collection_page(collection_id: str, page: int, items: list[Any], total: int, has_next: bool) -> dict[str, Any]:
    """Page `page` (from 1) of a paged OrderedCollection."""
    doc: dict[str, Any] = {
        "@context": AS_CONTEXT,
        "id": f"{collection_id}?page={page}",
        "type": "OrderedCollectionPage",
        "partOf": collection_id,
        "totalItems": total,
        "orderedItems": items,
    }
    if has_next:
        doc["next"] = f"{collection_id}?page={page + 1}"
    if page > 1:
        doc["prev"] = f"{collection_id}?page={page - 1}"
    return doc
