"""Inbound activities about posts: Create, Update and Delete of notes, Like,
Announce and their Undo, Move, Add/Remove (featured) and Flag.

Every handler checks that the signer owns what it changes: only an object's
author may update or delete it, an object must come from the same origin as
its actor, and boosted or replied-to objects are fetched from their own id.
"""

from __future__ import annotations

import time
from typing import Any

from microfedi.federation import activities, notes
from microfedi.federation.activities import id_of, type_of
from microfedi.federation.delivery import queue_publication
from microfedi.federation.processing import (
    OBJECT_DELETERS,
    OBJECT_UPDATERS,
    UNDO_HANDLERS,
    Refused,
    handles,
)
from microfedi.federation.remote import RemoteError, fetch_actor, fetch_authoritative
from microfedi.store import federation as fq
from microfedi.store import posts as pq
from microfedi.tasks.errors import PermanentError, RetryableError
from microfedi.tasks.registry import Priority, task_kind


async def _note_from(instance: Any, obj: Any, signer: str) -> dict[str, Any]:
    """The object of a Create: embedded if it is the signer's own, else fetched from its id."""
    if isinstance(obj, dict) and notes.host_of_url(id_of(obj) or "") == notes.host_of_url(signer):
        return obj
    uri = id_of(obj)
    if not uri:
        raise Refused("the object has no id" if isinstance(obj, dict) else "the activity has no object")
    return await fetch_authoritative(instance, uri)


@handles("Create")
async def on_create(instance: Any, doc: dict[str, Any], signer: str) -> None:
    obj = await _note_from(instance, doc.get("object"), signer)
    if type_of(obj) not in notes.NOTE_TYPES:
        return  # not a post (a chat message, a collection…): nothing we show
    author = id_of(obj.get("attributedTo")) or (activities.ids_of(obj.get("attributedTo")) or [None])[0]
    if author != signer:
        raise Refused(f"{signer} created an object attributed to {author}")
    try:
        await notes.ingest_note(instance, obj, activity_id=id_of(doc.get("id")))
    except notes.NoteError as exc:
        raise Refused(str(exc)) from None


async def _post_of(instance: Any, uri: str | None) -> pq.Post | None:
    return await instance.db.read(pq.get_post_by_uri, uri) if uri else None


async def update_note(instance: Any, doc: dict[str, Any], obj: dict[str, Any], signer: str) -> None:
    post = await _post_of(instance, id_of(obj))
    if post is None or post.deleted_at:
        return  # an edit of something we never stored
    if post.author != signer:
        raise Refused(f"{signer} may not update {post.uri}, which belongs to {post.author}")
    try:
        fields = notes.note_fields(obj, None)
    except notes.NoteError as exc:
        raise Refused(str(exc)) from None
    if fields.author != signer:
        raise Refused("an update may not change the author")
    activity = id_of(doc.get("id")) or f"update:{post.uri}:{fields.updated}"
    local = {uri: a.id for uri, a in instance.local_account_uris().items()}

    def write(conn: Any) -> None:
        if fields.poll is not None and fields.content == post.content and fields.summary == post.summary:
            pq.update_poll(conn, post.id, fields.poll)  # a vote count, not an edit
            return
        pq.update_post(
            conn, post.id, content=fields.content, summary=fields.summary, sensitive=fields.sensitive,
            updated=fields.updated or time.time(), mentions=fields.mentions, hashtags=fields.hashtags,
            attachments=fields.attachments, poll=fields.poll,
        )  # fmt: skip
        for booster in pq.boosters_of(conn, post.id):
            if booster in local:
                pq.add_notification(conn, local[booster], "update", signer, activity, post.id)

    await instance.db.write(write)


async def delete_post(instance: Any, target: str | None, signer: str) -> None:
    post = await _post_of(instance, target)
    if post is None:
        return
    if post.author != signer:
        raise Refused(f"{signer} may not delete {post.uri}, which belongs to {post.author}")
    await instance.db.write(pq.delete_post, post.id)


@handles("Like")
async def on_like(instance: Any, doc: dict[str, Any], signer: str) -> None:
    post = await _post_of(instance, id_of(doc.get("object")))
    if post is None or post.deleted_at or post.account_id is None:
        return  # we keep likes of our own posts only
    like_id = id_of(doc.get("id")) or f"like:{signer}:{post.uri}"

    def write(conn: Any) -> None:
        if pq.put_like(conn, like_id, signer, post.id) and not fq.is_blocked(conn, post.author, signer):
            pq.add_notification(conn, post.account_id, "favourite", signer, like_id, post.id)

    await instance.db.write(write)


@handles("Announce")
async def on_announce(instance: Any, doc: dict[str, Any], signer: str) -> None:
    obj = doc.get("object")
    uri = id_of(obj)
    if not uri:
        raise Refused("the Announce has no object")
    post = await _post_of(instance, uri)
    if post is None:
        fetched = await fetch_authoritative(instance, uri)
        if type_of(fetched) not in notes.NOTE_TYPES:
            return
        try:
            post = await notes.ingest_note(instance, fetched)
        except notes.NoteError as exc:
            raise Refused(str(exc)) from None
    if post.deleted_at or post.visibility not in ("public", "unlisted"):
        return  # only public posts can be boosted
    announce_id = id_of(doc.get("id")) or f"announce:{signer}:{post.uri}"
    visibility = notes.visibility_of(doc, None)
    published = notes.parse_time(doc.get("published"))
    local = {u: a.id for u, a in instance.local_account_uris().items()}

    def write(conn: Any) -> None:
        boost, created = pq.put_boost(conn, announce_id, signer, post.id, visibility, published)
        if not created:
            return
        if visibility in ("public", "unlisted"):
            pq.add_home_entries(conn, fq.local_followers(conn, signer, local), boost.id, post.id, boost.id)
        if post.account_id is not None and not fq.is_blocked(conn, post.author, signer):
            pq.add_notification(conn, post.account_id, "reblog", signer, announce_id, post.id)

    await instance.db.write(write)


async def undo_like(instance: Any, obj: Any, signer: str) -> None:
    uri = id_of(obj)
    found = await instance.db.read(lambda c: pq.find_like(c, uri=uri)) if uri else None
    if found is None and isinstance(obj, dict):
        post = await _post_of(instance, id_of(obj.get("object")))
        found = (None, signer, post.id) if post else None
    if found is not None and found[1] == signer:
        await instance.db.write(pq.delete_like, signer, found[2])


async def undo_announce(instance: Any, obj: Any, signer: str) -> None:
    uri = id_of(obj)
    boost = await instance.db.read(lambda c: pq.find_boost(c, uri=uri)) if uri else None
    if boost is None and isinstance(obj, dict):
        post = await _post_of(instance, id_of(obj.get("object")))
        boost = await instance.db.read(lambda c: pq.find_boost(c, actor=signer, post_id=post.id)) if post else None
    if boost is not None and boost.actor == signer:
        await instance.db.write(pq.delete_boost, boost.id)


@handles("Move")
async def on_move(instance: Any, doc: dict[str, Any], signer: str) -> None:
    if id_of(doc.get("object")) != signer:
        raise Refused("an actor can only move itself")
    target_uri = id_of(doc.get("target"))
    if not target_uri:
        raise Refused("the Move has no target")
    target = await fetch_actor(instance, target_uri)
    if signer not in target.also_known_as:
        raise Refused(f"{target_uri} does not list {signer} in alsoKnownAs")
    move_id = id_of(doc.get("id")) or f"move:{signer}:{target_uri}"
    for uri, account in instance.local_account_uris().items():
        follow = await instance.db.read(fq.get_follow, uri, signer)
        if follow is None or follow.state != "accepted":
            continue
        document = activities.make("Follow", uri, target.uri)

        def write(conn: Any, uri: str = uri, account: Any = account, document: dict[str, Any] = document) -> None:
            fq.delete_follow(conn, uri, signer)
            if fq.get_follow(conn, uri, target.uri) is None:
                fq.put_follow(conn, uri, target.uri, "pending", document["id"])
                queue_publication(conn, account.id, document, [target.inbox], None, {})
            pq.add_notification(conn, account.id, "move", signer, move_id)

        await instance.db.write(write)
    await instance.db.write(fq.set_moved_to, signer, target.uri)


async def _featured_change(instance: Any, doc: dict[str, Any], signer: str, pinned: bool) -> None:
    target = id_of(doc.get("target"))
    if not target or notes.host_of_url(target) != notes.host_of_url(signer):
        return  # only the actor's own featured collection is ours to track
    post = await _post_of(instance, id_of(doc.get("object")))
    if post is None or post.author != signer:
        return
    await instance.db.write(pq.set_pinned, post.id, pinned)


@handles("Add")
async def on_add(instance: Any, doc: dict[str, Any], signer: str) -> None:
    await _featured_change(instance, doc, signer, True)


@handles("Remove")
async def on_remove(instance: Any, doc: dict[str, Any], signer: str) -> None:
    await _featured_change(instance, doc, signer, False)


@handles("Flag")
async def on_flag(instance: Any, doc: dict[str, Any], signer: str) -> None:
    targets = activities.ids_of(doc.get("object"))
    local = [t for t in targets if notes.host_of_url(t) in instance.local_hosts()]
    if not local:
        return  # a report about no one here
    content = doc.get("content") if isinstance(doc.get("content"), str) else ""
    report_id = id_of(doc.get("id")) or f"flag:{signer}:{','.join(targets)}"
    await instance.db.write(pq.insert_report, report_id, signer, targets[:100], content[:5000])


@task_kind("fetch-object", priority=Priority.FETCH, max_attempts=5, retry_window=6 * 3600, timeout=30, concurrency=4, per_host=True)
async def fetch_object(ctx: Any, payload: dict[str, Any]) -> None:
    """Fetch a post we were pointed at (a reply's parent), depth-limited by the payload."""
    try:
        doc = await fetch_authoritative(ctx.instance, payload["uri"])
    except RemoteError as exc:
        if exc.permanent:
            raise PermanentError(exc.reason) from None
        raise RetryableError(exc.reason) from None
    if type_of(doc) in notes.NOTE_TYPES:
        try:
            await notes.ingest_note(ctx.instance, doc, depth=payload.get("depth", 1))
        except notes.NoteError as exc:
            raise Refused(str(exc)) from None


OBJECT_DELETERS.append(delete_post)
OBJECT_UPDATERS.update({kind: update_note for kind in notes.NOTE_TYPES})
UNDO_HANDLERS.update({"Like": undo_like, "Announce": undo_announce})
