"""Periodic federation upkeep: refresh stale remote actors, forget old inbox ids."""

from __future__ import annotations

import logging
import time
from typing import Any

from microfedi.federation.remote import ACTOR_TTL, RemoteError, fetch_actor
from microfedi.store import federation as fq
from microfedi.tasks.registry import TaskContext, task_kind

log = logging.getLogger(__name__)

REFRESH_BATCH = 50
# Redelivery of an activity happens within the sender's retry window (about
# two days at Mastodon); remembering ids for a week covers it.
SEEN_RETENTION = 7 * 86400


@task_kind("federation.refresh-actors", every=3600, timeout=600)
async def refresh_stale_actors(ctx: TaskContext, payload: dict[str, Any]) -> None:
    """Re-fetch remote actors we have a relationship with, once they are a day old."""
    instance = ctx.instance
    stale = await instance.db.read(fq.stale_remote_actors, time.time() - ACTOR_TTL, REFRESH_BATCH)
    for uri in stale:
        try:
            await fetch_actor(instance, uri)
        except RemoteError as exc:
            if exc.gone:
                await instance.db.write(fq.mark_remote_actor_deleted, uri)
            else:
                log.info("could not refresh %s: %s", uri, exc.reason)


@task_kind("federation.forget-seen", every=6 * 3600, timeout=300)
async def forget_seen_activities(ctx: TaskContext, payload: dict[str, Any]) -> None:
    await ctx.instance.db.write(fq.purge_seen, time.time() - SEEN_RETENTION)
