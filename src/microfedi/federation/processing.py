"""Processing accepted inbox activities (the `inbox` task kind).

Every handler is idempotent: the task may run again after a crash. The signer
was checked to be the activity's actor before the task was queued; handlers
check that the objects they touch belong to that actor.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from microfedi.federation import activities
from microfedi.federation.activities import id_of, type_of
from microfedi.federation.delivery import publish
from microfedi.federation.remote import RemoteError, actor_fields, get_actor
from microfedi.store import federation as fq
from microfedi.store import posts as pq
from microfedi.store.federation import Follow
from microfedi.tasks.errors import PermanentError, RetryableError
from microfedi.tasks.registry import Priority, task_kind

log = logging.getLogger(__name__)

Handler = Callable[[Any, dict[str, Any], str], Awaitable[None]]
HANDLERS: dict[str, Handler] = {}
# Undo of activities about posts (Like, Announce), registered by inbound_posts.
UndoHandler = Callable[[Any, Any, str], Awaitable[None]]
UNDO_HANDLERS: dict[str, UndoHandler] = {}


def handles(kind: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[kind] = fn
        return fn

    return register


@task_kind("inbox", priority=Priority.INBOUND, max_attempts=8, retry_window=12 * 3600, timeout=60, concurrency=8)
async def process_inbox(ctx: Any, payload: dict[str, Any]) -> None:
    doc, signer = payload["activity"], payload["signer"]
    handler = HANDLERS.get(type_of(doc) or "")
    if handler is None:
        log.debug("ignoring %s activity %s", type_of(doc), id_of(doc.get("id")))
        return
    try:
        await handler(ctx.instance, doc, signer)
    except RemoteError as exc:
        if exc.permanent:
            raise PermanentError(exc.reason) from None
        raise RetryableError(exc.reason) from None


async def _inbox_of(instance: Any, uri: str, signer_host: str) -> str:
    """The personal inbox of an actor, local or remote."""
    local = instance.local_account_by_reference(uri)
    if local is not None:
        return instance.urls.inbox(local)
    return (await get_actor(instance, uri, signer_host=signer_host)).inbox


@handles("Follow")
async def on_follow(instance: Any, doc: dict[str, Any], signer: str) -> None:
    account = instance.local_account_by_reference(id_of(doc.get("object")) or "")
    if account is None:
        return
    me = instance.urls.actor(account)
    inbox = await _inbox_of(instance, signer, account.host)
    if await instance.db.read(fq.is_blocked, me, signer):
        await publish(instance, account, activities.make("Reject", me, doc), inboxes=[inbox])
        return
    existing = await instance.db.read(fq.get_follow, signer, me)
    held = account.locked and (existing is None or existing.state == "pending")
    state = "pending" if held else "accepted"

    def record(conn: Any) -> None:
        fq.put_follow(conn, signer, me, state, doc["id"])
        if existing is None or existing.state != state:
            kind = "follow_request" if held else "follow"
            pq.add_notification(conn, account.id, kind, signer, doc["id"])

    await instance.db.write(record)
    if not held:
        await publish(instance, account, activities.make("Accept", me, doc), inboxes=[inbox])


async def _our_follow(instance: Any, obj: Any, followee: str) -> Follow | None:
    """The follow an Accept/Reject from `followee` answers: by Follow id, or by its parts."""
    follow_id = id_of(obj)
    found = await instance.db.read(fq.find_follow_by_activity, follow_id) if follow_id else None
    if found is None and isinstance(obj, dict):
        follower = id_of(obj.get("actor"))
        if follower:
            found = await instance.db.read(fq.get_follow, follower, followee)
    if found is None or found.followee != followee:
        return None  # not ours, or someone answering for another actor
    return found


@handles("Accept")
async def on_accept(instance: Any, doc: dict[str, Any], signer: str) -> None:
    follow = await _our_follow(instance, doc.get("object"), signer)
    if follow is not None:
        await instance.db.write(fq.accept_follow, follow.id)


@handles("Reject")
async def on_reject(instance: Any, doc: dict[str, Any], signer: str) -> None:
    follow = await _our_follow(instance, doc.get("object"), signer)
    if follow is not None:
        await instance.db.write(fq.delete_follow, follow.follower, follow.followee)


@handles("Undo")
async def on_undo(instance: Any, doc: dict[str, Any], signer: str) -> None:
    obj = doc.get("object")
    kind = type_of(obj)
    if kind is None:  # a bare id: only our records can say what it was
        found = await instance.db.read(fq.find_follow_by_activity, id_of(obj) or "")
        if found is not None and found.follower == signer:
            await instance.db.write(fq.delete_follow, found.follower, found.followee)
            return
        for undo in UNDO_HANDLERS.values():
            await undo(instance, obj, signer)
        return
    if id_of(obj.get("actor")) != signer:
        return  # only an activity's own actor may undo it
    target = id_of(obj.get("object")) or ""
    if kind == "Follow":
        await instance.db.write(fq.delete_follow, signer, target)
    elif kind == "Block":
        await instance.db.write(fq.delete_block, signer, target)
    elif kind in UNDO_HANDLERS:
        await UNDO_HANDLERS[kind](instance, obj, signer)


class Refused(PermanentError):
    """An activity we will not apply; the reason is kept on the dead task."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"refused: {reason}")


@handles("Block")
async def on_block(instance: Any, doc: dict[str, Any], signer: str) -> None:
    account = instance.local_account_by_reference(id_of(doc.get("object")) or "")
    if account is None:
        return
    me = instance.urls.actor(account)

    def record(conn: Any) -> None:
        fq.put_block(conn, signer, me, doc["id"])
        fq.delete_follow(conn, signer, me)
        fq.delete_follow(conn, me, signer)

    await instance.db.write(record)


@handles("Delete")
async def on_delete(instance: Any, doc: dict[str, Any], signer: str) -> None:
    target = id_of(doc.get("object"))
    if target == signer:  # an actor deleting itself
        await instance.db.write(fq.mark_remote_actor_deleted, signer)
        return
    for delete in OBJECT_DELETERS:
        await delete(instance, target, signer)


@handles("Update")
async def on_update(instance: Any, doc: dict[str, Any], signer: str) -> None:
    obj = doc.get("object")
    if not isinstance(obj, dict):
        return  # Mastodon sends Updates with the object embedded; a bare id says nothing
    if type_of(obj) in activities.ACTOR_TYPES:
        if id_of(obj) != signer:
            raise Refused(f"{signer} may not update the actor {id_of(obj)}")
        await instance.db.write(fq.upsert_remote_actor, signer, actor_fields(obj), None)
    elif type_of(obj) in OBJECT_UPDATERS:
        await OBJECT_UPDATERS[type_of(obj)](instance, doc, obj, signer)


# Deletes and Updates of objects other than actors, registered by inbound_posts.
OBJECT_DELETERS: list[Callable[[Any, str | None, str], Awaitable[None]]] = []
OBJECT_UPDATERS: dict[str, Callable[[Any, dict[str, Any], dict[str, Any], str], Awaitable[None]]] = {}
