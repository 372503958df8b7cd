"""Profile edits and account migration of local accounts.

Every change is sent to followers as an Update of the actor, in the same
transaction that stores it. A move sets `movedTo` and sends a Move, once the
new account lists this one in its `alsoKnownAs` (other servers check that too).
"""

from __future__ import annotations

from typing import Any

from microfedi.accounts import get_user, remove_user
from microfedi.content import plain_text_to_html
from microfedi.domains import remove_domain
from microfedi.errors import ActionError
from microfedi.federation import activities
from microfedi.federation.actors import local_actor
from microfedi.federation.delivery import queue_publication
from microfedi.federation.remote import fetch_actor, RemoteError, resolve
from microfedi.store import directory as q
from microfedi.store.directory import AccountRow

MAX_FIELDS = 4
MAX_NAME = 100
MAX_BIO = 2000


def _send_update(instance: Any, conn: Any, account_id: int, extra: dict[str, Any] | None = None) -> AccountRow:
    """Queue an Update of the (just changed) actor to its followers; returns the account."""
    account = q.get_account_by_id(conn, account_id)
    me = instance.urls.actor(account)
    document = activities.make("Update", me, local_actor(account, instance.urls))
    document["to"], document["cc"] = [activities.PUBLIC], [instance.urls.followers(account)]
    queue_publication(conn, account.id, document, [], me, {})
    if extra:
        queue_publication(conn, account.id, extra, [], me, {})
    return account


async def _change(instance: Any, account: AccountRow, changes: dict[str, Any], extra: dict[str, Any] | None = None) -> AccountRow:
    def write(conn: Any) -> AccountRow:
        q.update_profile(conn, account.id, changes)
        return _send_update(instance, conn, account.id, extra)

    updated = await instance.db.write(write)
    instance.wake_tasks()
    return updated


async def update_profile(
    instance: Any, handle: str, *, name: str | None = None, bio: str | None = None,
    fields: list[tuple[str, str]] | None = None, locked: bool | None = None, discoverable: bool | None = None,
) -> AccountRow:  # fmt: skip
    """Change display name, bio, profile fields and flags; followers get an Update."""
    account = await get_user(instance.db, handle)
    changes: dict[str, Any] = {}
    if name is not None:
        if len(name) > MAX_NAME:
            raise ActionError(f"the name is longer than {MAX_NAME} characters")
        changes["display_name"] = name.strip()
    if bio is not None:
        if len(bio) > MAX_BIO:
            raise ActionError(f"the bio is longer than {MAX_BIO} characters")
        origin = instance.urls.origin(account.host)
        changes["summary"] = plain_text_to_html(bio, mention_links={}, tag_url=lambda t: f"{origin}/tags/{t}")
    if fields is not None:
        if len(fields) > MAX_FIELDS:
            raise ActionError(f"at most {MAX_FIELDS} profile fields")
        changes["fields"] = [[label.strip()[:255], value.strip()[:2047]] for label, value in fields]
    if locked is not None:
        changes["locked"] = int(locked)
    if discoverable is not None:
        changes["discoverable"] = int(discoverable)
    if not changes:
        raise ActionError("nothing to change; see --help for what can be set")
    return await _change(instance, account, changes)


async def set_alias(instance: Any, handle: str, reference: str, *, remove: bool = False) -> tuple[AccountRow, str]:
    """Add (or remove) an `alsoKnownAs` alias: an account you are moving from or to."""
    account = await get_user(instance.db, handle)
    local = instance.local_account_by_reference(reference)
    uri = instance.urls.actor(local) if local else (await resolve(instance, reference, signer_host=account.host)).uri
    aliases = [a for a in account.also_known_as if a != uri]
    if not remove:
        aliases.append(uri)
    elif len(aliases) == len(account.also_known_as):
        raise ActionError(f"{uri} is not an alias of {account.handle}", status=404)
    return await _change(instance, account, {"also_known_as": aliases}), uri


async def move(instance: Any, handle: str, reference: str) -> tuple[AccountRow, str]:
    """Move to another account: followers are told (Move) and re-follow it.

    The new account must already list this one in its alsoKnownAs.
    """
    account = await get_user(instance.db, handle)
    me = instance.urls.actor(account)
    local = instance.local_account_by_reference(reference)
    if local is not None:
        target_uri, aliases = instance.urls.actor(local), local.also_known_as
    else:
        found = await resolve(instance, reference, signer_host=account.host)
        try:  # fresh, not cached: the alias was probably added a minute ago
            found = await fetch_actor(instance, found.uri, signer_host=account.host)
        except RemoteError as exc:
            raise ActionError(f"cannot fetch {found.uri}: {exc.reason}") from None
        target_uri, aliases = found.uri, found.also_known_as
    if target_uri == me:
        raise ActionError("an account cannot move to itself")
    if me not in aliases:
        raise ActionError(
            f"{target_uri} does not list {me} in alsoKnownAs; add this account as an alias on the new one first"
        )
    document = activities.make("Move", me, me)
    document["target"] = target_uri
    document["to"], document["cc"] = [instance.urls.followers(account)], []
    updated = await _change(instance, account, {"moved_to": target_uri}, extra=document)
    return updated, target_uri


def _actor_delete(instance: Any) -> Any:
    """A callback that queues the Delete of a removed account's actor to its followers."""

    def send_delete(conn: Any, account: AccountRow) -> None:
        me = instance.urls.actor(account)
        document = activities.make("Delete", me, me)
        document["to"], document["cc"] = [activities.PUBLIC], [instance.urls.followers(account)]
        queue_publication(conn, account.id, document, [], me, {})

    return send_delete


async def delete_account(instance: Any, handle: str) -> AccountRow:
    """Remove a local account and tell its followers' servers (Delete of the actor)."""
    removed = await remove_user(instance.db, handle, also=_actor_delete(instance))
    instance.wake_tasks()
    return removed


async def delete_domain(instance: Any, name: str, *, force: bool) -> int:
    """Remove a domain; with force its users too, each with a Delete to its followers."""
    removed = await remove_domain(instance.db, name, force=force, also=_actor_delete(instance))
    instance.wake_tasks()
    return removed
