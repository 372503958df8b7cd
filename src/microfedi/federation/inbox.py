"""The inbox: verify a POSTed activity, answer 202 at once, queue the work.

Refusals, each with a one-line reason: 413 over 1 MiB; 400 for a body that is
not an activity; 401 for a missing or bad signature, a Digest that does not
match, a Date outside the allowed skew, a key that cannot be fetched, or an
activity whose `actor` is not the key's owner. Nothing is stored for a refused
request. A redelivered activity id is accepted and processed once.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from microfedi.federation.activities import id_of, type_of
from microfedi.federation.http import read_capped
from microfedi.federation.remote import RemoteError, actor_for_key, host_of_url
from microfedi.federation.signatures import (
    SignatureError,
    load_public_key,
    parse_signed_request,
    verify_signed_request,
)
from microfedi.store import federation as fq
from microfedi.tasks.queue import enqueue
from microfedi.web.responses import directory, error, host_view

MAX_BODY = 1 << 20


def activity_key(doc: dict[str, Any], body: bytes) -> str:
    """What deduplicates an activity: its id, or a hash of the body when it has none."""
    return id_of(doc.get("id")) or "sha256:" + hashlib.sha256(body).hexdigest()


def _take_in(conn: sqlite3.Connection, key: str, payload: dict[str, Any]) -> bool:
    if not fq.mark_seen(conn, key):
        return False
    enqueue(conn, "inbox", payload, dedupe_key=f"inbox:{key}")
    return True


async def take_in(instance: Any, doc: dict[str, Any], key: str, recipient: int | None, signer: str | None) -> bool:
    """Record an accepted activity and queue its processing; False if seen before."""
    payload = {"activity": doc, "recipient": recipient, "signer": signer}
    return await instance.db.write(_take_in, key, payload)


async def accept_local(instance: Any, doc: dict[str, Any], inbox_url: str) -> None:
    """Deliver an activity from one local actor to another without HTTP."""
    recipient = instance.account_for_inbox(inbox_url)
    await take_in(instance, doc, activity_key(doc, b""), recipient, id_of(doc.get("actor")))


async def _verified_actor(instance: Any, request: Request, body: bytes, host: str) -> str:
    """The URI of the actor whose key signed this request, or SignatureError/RemoteError."""
    target = request.scope["raw_path"].decode("latin-1")
    if request.scope.get("query_string"):
        target += "?" + request.scope["query_string"].decode("latin-1")
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]]
    signed = parse_signed_request(
        request.method,
        target,
        headers,
        body,
        scheme=instance.settings.public_scheme,
        authority=request.headers.get("host"),
    )
    actor = await actor_for_key(instance, signed.key_id, signer_host=host)
    try:
        verify_signed_request(signed, load_public_key(actor.public_key_pem or ""))
    except SignatureError:
        # The key may have rotated: fetch it again, once.
        actor = await actor_for_key(instance, signed.key_id, signer_host=host, refresh=True)
        verify_signed_request(signed, load_public_key(actor.public_key_pem or ""))
    return actor.uri


async def inbox_endpoint(request: Request) -> Response:
    """POST /inbox (shared) and POST /@user/inbox (personal)."""
    instance = request.app.state.instance
    host = host_view(request).host
    recipient: int | None = None
    if "username" in request.path_params:
        account = directory(request).accounts_by_url.get((host, request.path_params["username"].lower()))
        if account is None:
            return error(404, f"no account @{request.path_params['username']} on {host}")
        recipient = account.id
    elif not host_view(request).serves_actors:
        return error(404, f"{host} serves no actors")
    try:
        body = await read_capped(request.headers.get("content-length"), request.stream(), MAX_BODY)
    except ClientDisconnect:
        return error(400, "the request body was cut off")
    if body is None:
        return error(413, f"activity larger than {MAX_BODY} bytes")
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return error(400, "the body is not JSON")
    actor_id = id_of(doc.get("actor")) if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or not type_of(doc) or not actor_id:
        return error(400, "the body is not an activity (it needs a type and an actor)")
    try:
        signer = await _verified_actor(instance, request, body, host)
    except SignatureError as exc:
        return error(401, f"signature refused: {exc.reason}")
    except RemoteError as exc:
        if exc.status in (404, 410) and type_of(doc) == "Delete":
            # A Delete from an actor we cannot fetch (gone, or never known): as
            # Mastodon does, say yes and do nothing; there is nothing of it to delete.
            return Response(status_code=202)
        return error(401, f"signature refused: cannot get the signing key: {exc.reason}")
    if signer != actor_id:
        return error(401, f"signature refused: signed by {signer}, but the activity's actor is {actor_id}")
    activity_id = id_of(doc.get("id"))
    if activity_id and host_of_url(activity_id) != host_of_url(signer):
        # An id on another host could shadow that host's real activity in the
        # deduplication (and we do not take in forwarded activities).
        return error(400, f"the activity id {activity_id} is not on its actor's host")
    await take_in(instance, doc, activity_key(doc, body), recipient, signer)
    return Response(status_code=202)
