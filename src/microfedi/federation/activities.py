"""Reading ActivityStreams values, and building the activities we send.

Values from other servers come in many shapes (a URI string, an object with an
`id`, a list of either); the readers here reduce them to what we use.
"""

from __future__ import annotations

from typing import Any

from microfedi.federation.actors import AS_CONTEXT
from microfedi.store.ids import new_id

PUBLIC = "https://www.w3.org/ns/activitystreams#Public"
ACTOR_TYPES = frozenset({"Person", "Service", "Application", "Group", "Organization"})


def id_of(value: Any) -> str | None:
    """The id of a reference: a string itself, or an object's `id`."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        inner = value.get("id")
        return inner if isinstance(inner, str) else None
    return None


def link_of(value: Any) -> str | None:
    """A URL from a reference that may be a string, an object, a Link (`href`) or a list of those."""
    if isinstance(value, list):
        return next((found for found in map(link_of, value) if found), None)
    if isinstance(value, dict) and isinstance(value.get("href"), str) and not isinstance(value.get("id"), str):
        return value["href"]
    return id_of(value)


def ids_of(value: Any) -> list[str]:
    """Ids of a reference or a list of references, skipping the unreadable."""
    items = value if isinstance(value, list) else [value]
    return [i for i in (id_of(item) for item in items) if i]


def type_of(value: Any) -> str | None:
    """The `type` of an object; the first one when it is a list."""
    if not isinstance(value, dict):
        return None
    kind = value.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if isinstance(k, str)), None)
    if not isinstance(kind, str):
        return None
    # Compacted against the ActivityStreams context some servers write "as:Note".
    return kind.removeprefix("as:").removeprefix("https://www.w3.org/ns/activitystreams#")


def activity_uri(actor_uri: str) -> str:
    """A fresh id for an activity of a local actor; served at that URL."""
    return f"{actor_uri}/activities/{new_id()}"


def make(kind: str, actor_uri: str, obj: str | dict[str, Any]) -> dict[str, Any]:
    """A new activity of a local actor. An object given as a dict is embedded
    (Accept, Reject and Undo embed the original activity, as Mastodon expects)."""
    if isinstance(obj, dict):
        obj = {key: value for key, value in obj.items() if key != "@context"}
    return {
        "@context": AS_CONTEXT,
        "id": activity_uri(actor_uri),
        "type": kind,
        "actor": actor_uri,
        "object": obj,
    }
