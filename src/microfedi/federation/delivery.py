"""Publishing activities: one `deliver` task per inbox, signed POSTs, local short-cuts.

`publish` stores the activity and enqueues its deliveries in one transaction, so
a crash either loses the whole action or none of it. Followers are reached
through their servers' shared inboxes (one request per server, not per
follower); recipients addressed by name through their own inbox. Inboxes on
this very server are handed to the inbox processor directly, without HTTP.
"""

from __future__ import annotations

import json
import sqlite3
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit

from microfedi.federation.http import FetchError
from microfedi.federation.inbox import accept_local
from microfedi.federation.remote import host_of_url
from microfedi.store import federation as fq
from microfedi.store.directory import AccountRow
from microfedi.tasks.errors import HostError, PermanentError, RetryableError
from microfedi.tasks.queue import enqueue_many
from microfedi.tasks.registry import Priority, task_kind

DELIVERY_WINDOW = 2 * 86400  # about two days of retries, as Mastodon does


def _deliveries(activity_row: int, inboxes: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "payload": {"activity": activity_row, "inbox": inbox},
            "dedupe_key": f"deliver:{activity_row}:{inbox}",
            "host": host_of_url(inbox),
        }
        for inbox in dict.fromkeys(inboxes)
    ]


def queue_publication(
    conn: sqlite3.Connection,
    account_id: int,
    document: dict[str, Any],
    inboxes: list[str],
    followers_of: str | None,
    local_inbox: dict[str, str],
) -> int:
    """Store an activity and queue its deliveries inside the caller's transaction.

    `local_inbox` maps local actor URIs to their inboxes, for local followers
    that should get it through the inbox too (empty: local fan-out is done by
    the caller).
    """
    row = fq.insert_activity(conn, document["id"], account_id, document)
    targets = list(inboxes)
    if followers_of is not None:
        targets += fq.follower_inboxes(conn, followers_of)
        targets += fq.local_followers(conn, followers_of, local_inbox)
    enqueue_many(conn, "deliver", _deliveries(row, targets))
    return row


async def publish(
    instance: Any,
    account: AccountRow,
    document: dict[str, Any],
    *,
    inboxes: list[str] = (),  # type: ignore[assignment]
    to_followers: bool = False,
) -> int:
    """Store a local account's activity and enqueue its delivery.

    `inboxes` are explicit targets; with `to_followers`, the shared inboxes of
    the account's accepted followers are added (one delivery per server).
    """
    local_inbox = instance.local_inboxes()
    followers_of = instance.urls.actor(account) if to_followers else None
    return await instance.db.write(queue_publication, account.id, document, list(inboxes), followers_of, local_inbox)


class ActivityCache:
    """The serialized bodies of recently published activities, for fan-out."""

    def __init__(self, size: int = 64) -> None:
        self._bodies: OrderedDict[int, tuple[int, bytes]] = OrderedDict()
        self._size = size

    async def get(self, db: Any, row: int) -> tuple[int, bytes] | None:
        if row in self._bodies:
            self._bodies.move_to_end(row)
            return self._bodies[row]
        found = await db.read(fq.get_activity, row)
        if found is None:
            return None
        entry = (found[0], found[1].encode())
        self._bodies[row] = entry
        if len(self._bodies) > self._size:
            self._bodies.popitem(last=False)
        return entry


@task_kind(
    "deliver",
    priority=Priority.DELIVERY,
    max_attempts=25,
    retry_window=DELIVERY_WINDOW,
    timeout=30,
    concurrency=32,
    per_host=True,
)
async def deliver(ctx: Any, payload: dict[str, Any]) -> None:
    """POST one activity to one inbox, signed by its author."""
    instance = ctx.instance
    inbox = payload["inbox"]
    found = await instance.activity_cache.get(instance.db, payload["activity"])
    if found is None:
        raise PermanentError("the activity no longer exists")
    account_id, body = found
    if urlsplit(inbox).hostname in instance.local_hosts():
        await accept_local(instance, json.loads(body), inbox)
        return
    signer = await instance.account_signer(account_id)
    try:
        await instance.deliveries.post(inbox, body, signer=signer)
    except FetchError as exc:
        if exc.status == 401:
            # Their key fetch of our actor may have failed for a moment: retry,
            # but this says nothing about the host being down.
            raise RetryableError(str(exc)) from None
        if exc.permanent:
            raise PermanentError(str(exc)) from None
        raise HostError(host_of_url(inbox), str(exc), retry_after=exc.retry_after) from None
