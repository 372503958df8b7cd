"""Follow relationships of local accounts: the actions and the lists.

Used by the CLI now, and by the web UI and client API later. Relationships are
stored by actor URI, so a local account following another local account (on
any of our domains) works the same way as a remote one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from microfedi.accounts import get_user
from microfedi.errors import ActionError
from microfedi.federation import activities
from microfedi.federation.delivery import publish
from microfedi.federation.remote import resolve
from microfedi.store import federation as fq
from microfedi.store.directory import AccountRow


@dataclass(frozen=True)
class Party:
    """The other side of a relationship: a local account or a remote actor."""

    uri: str
    handle: str
    inbox: str
    local: bool


async def find_party(instance: Any, account: AccountRow, reference: str) -> Party:
    """Resolve `user@domain` or an actor URL, local accounts included."""
    local = instance.local_account_by_reference(reference)
    if local is not None:
        return Party(instance.urls.actor(local), local.handle, instance.urls.inbox(local), True)
    actor = await resolve(instance, reference, signer_host=account.host)
    return Party(actor.uri, actor.handle, actor.inbox, False)


async def follow(instance: Any, local_handle: str, reference: str) -> tuple[Party, str]:
    """Send a Follow. Returns the followee and the state (pending until Accepted)."""
    account = await get_user(instance.db, local_handle)
    target = await find_party(instance, account, reference)
    me = instance.urls.actor(account)
    if target.uri == me:
        raise ActionError("an account cannot follow itself")
    existing = await instance.db.read(fq.get_follow, me, target.uri)
    if existing is not None and existing.state == "accepted":
        return target, "accepted"
    document = activities.make("Follow", me, target.uri)
    await instance.db.write(fq.put_follow, me, target.uri, "pending", document["id"])
    await publish(instance, account, document, inboxes=[target.inbox])
    instance.wake_tasks()
    return target, "pending"


async def _original_activity(instance: Any, uri: str, fallback: dict[str, Any]) -> dict[str, Any]:
    stored = await instance.db.read(fq.get_activity_by_uri, uri)
    return json.loads(stored[1]) if stored else fallback


async def unfollow(instance: Any, local_handle: str, reference: str) -> Party:
    """Undo a Follow (pending or accepted)."""
    account = await get_user(instance.db, local_handle)
    target = await find_party(instance, account, reference)
    me = instance.urls.actor(account)
    existing = await instance.db.read(fq.get_follow, me, target.uri)
    if existing is None:
        raise ActionError(f"{account.handle} does not follow {target.handle}", status=404)
    original = await _original_activity(
        instance, existing.activity_id, {"id": existing.activity_id, "type": "Follow", "actor": me, "object": target.uri}
    )
    await instance.db.write(fq.delete_follow, me, target.uri)
    await publish(instance, account, activities.make("Undo", me, original), inboxes=[target.inbox])
    instance.wake_tasks()
    return target


async def answer_follow_request(instance: Any, local_handle: str, reference: str, *, accept: bool) -> Party:
    """Approve or refuse a pending follower of a locked account (refusing also removes an accepted one)."""
    account = await get_user(instance.db, local_handle)
    party = await find_party(instance, account, reference)
    me = instance.urls.actor(account)
    existing = await instance.db.read(fq.get_follow, party.uri, me)
    if existing is None:
        raise ActionError(f"{party.handle} has not asked to follow {account.handle}", status=404)
    follow_doc = {"id": existing.activity_id, "type": "Follow", "actor": party.uri, "object": me}
    if accept:
        await instance.db.write(fq.accept_follow, existing.id)
    else:
        await instance.db.write(fq.delete_follow, party.uri, me)
    kind = "Accept" if accept else "Reject"
    await publish(instance, account, activities.make(kind, me, follow_doc), inboxes=[party.inbox])
    instance.wake_tasks()
    return party


async def block(instance: Any, local_handle: str, reference: str, *, undo: bool = False) -> Party:
    """Block (or unblock) an actor: it stops following and being followed."""
    account = await get_user(instance.db, local_handle)
    party = await find_party(instance, account, reference)
    me = instance.urls.actor(account)
    if undo:
        block_id = await instance.db.read(fq.block_activity, me, party.uri)
        if block_id is None:
            raise ActionError(f"{account.handle} does not block {party.handle}", status=404)
        await instance.db.write(fq.delete_block, me, party.uri)
        original = {"id": block_id, "type": "Block", "actor": me, "object": party.uri}
        document = activities.make("Undo", me, original)
    else:
        document = activities.make("Block", me, party.uri)

        def record(conn: Any) -> None:
            fq.put_block(conn, me, party.uri, document["id"])
            fq.delete_follow(conn, me, party.uri)
            fq.delete_follow(conn, party.uri, me)

        await instance.db.write(record)
    await publish(instance, account, document, inboxes=[party.inbox])
    instance.wake_tasks()
    return party


@dataclass(frozen=True)
class Relationship:
    uri: str
    handle: str
    state: str
    since: float


async def relationships(instance: Any, local_handle: str, *, followers: bool) -> list[Relationship]:
    """Followers (or followings) of a local account, pending and accepted, newest first."""
    account = await get_user(instance.db, local_handle)
    me = instance.urls.actor(account)
    side = {"followee": me} if followers else {"follower": me}
    rows = await instance.db.read(lambda conn: fq.list_follows(conn, limit=100_000, **side))
    others = [row.follower if followers else row.followee for row in rows]
    remote = await instance.db.read(fq.get_remote_actors, others)
    result = []
    for row, uri in zip(rows, others):
        local = instance.local_account_by_reference(uri)
        handle = local.handle if local else (remote[uri].handle if uri in remote else uri)
        result.append(Relationship(uri, handle, row.state, row.accepted_at or row.created_at))
    return result
