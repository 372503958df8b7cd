"""Home timeline: latency of a 40-post page, in-process, with 50,000 posts stored.

A fresh install (made with the CLI) knows 300 remote actors on 10 servers;
alice@alice.example follows 200 of them and blocks 3 of the others. 50,000
posts arrive in publication order over 60 days, spread evenly over the 300
authors, so about two thirds land in alice's home timeline; 70 % are public,
15 % unlisted, 10 % followers-only and 5 % direct messages to someone else.
Text, hashtags, mentions and images are shaped as Mastodon sends them
(inbound_creates.note_document).

How they are stored, and why it is the same as the server would:

- every 50th post (1,000 in all) is a Create run through the inbox handler
  (`process_inbox` → `on_create` → `ingest_note`), the path of a real Create;
- the other 49,000 are checked and sanitized by that path's own
  `notes.note_fields`, then stored with the store functions `ingest_note`
  uses, `insert_post` and `add_home_entries` for a followed author's non-direct
  post, a batch of about 1,000 per write transaction (about 20 s instead of 40);
- 500 boosts by followed actors of earlier public posts are Announces run
  through the inbox handler, spread over the same 60 days.

Then, with the process pinned to one CPU, 1,000 page reads through
`microfedi.posts.timeline` (the action the CLI and the client API call: the
account lookup and the page query, each on the reader pool): 60 % first pages
(a refresh), 30 % the next page of a scroll (max_id from the page before), 10 %
a page at a random depth. The same 1,000 pages are then read with the bare
query (`store.posts.home_page` on one connection in this thread), to tell the
query from the thread hops around it. Every page is checked: 40 entries,
newest first, no blocked author.

    python bench/timeline.py                 # prints JSON
    python bench/timeline.py --reads 1000 --posts 50000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import BenchError, machine_info, prepare_data_dir, progress, run_script
from fanout import SERVER_CPU, on_cpu, opened_install
from inbound_creates import (
    READER,
    create_activity,
    note_document,
    remote_actor_uri,
    seed_remote_actors,
)

from microfedi import posts
from microfedi.federation import inbound_posts  # noqa: F401  (registers the handlers of Create & co.)
from microfedi.federation.activities import PUBLIC
from microfedi.federation.notes import note_fields
from microfedi.federation.processing import process_inbox
from microfedi.instance import Instance
from microfedi.store import federation as fq
from microfedi.store import posts as pq
from microfedi.store.database import connect
from microfedi.store.posts import NewPost
from microfedi.tasks.registry import TaskContext

GOAL_P99_MS = 20.0
PAGE = 40
FOLLOWED, NOT_FOLLOWED, BLOCKED = 200, 100, 3
THROUGH_HANDLER_EVERY = 50  # every 50th post is a Create run through the inbox handler
BOOSTS = 500
SPAN_S = 60 * 86400
BATCH = 1000


@dataclass(frozen=True)
class Population:
    """Who is who: the authors alice follows, those she does not, and those she blocks."""

    me: str
    account_id: int
    followed: list[str]
    others: list[str]
    blocked: list[str]

    @property
    def authors(self) -> list[str]:
        return self.followed + self.others


def address(doc: dict[str, Any], rng: random.Random, population: Population) -> None:
    """Give a note Mastodon's addressing of a random visibility (70/15/10/5 %)."""
    followers = f"{doc['attributedTo']}/followers"
    roll = rng.random()
    if roll < 0.70:
        doc["to"], doc["cc"] = [PUBLIC], [followers]
    elif roll < 0.85:
        doc["to"], doc["cc"] = [followers], [PUBLIC]
    elif roll < 0.95:
        doc["to"], doc["cc"] = [followers], []
    else:
        doc["to"], doc["cc"] = [rng.choice(population.authors)], []


def _store_batch(conn: Any, batch: Sequence[NewPost], account_id: int, followed: frozenset[str]) -> None:
    """What ingest_note stores for a post alice may see: the post, and her home entry if she follows its author."""
    for post in batch:
        post_id, created = pq.insert_post(conn, post)
        if created and post.author in followed and post.visibility != "direct":
            pq.add_home_entries(conn, [account_id], post_id, post_id)


async def _through_handler(instance: Instance, activity: dict[str, Any]) -> None:
    context = TaskContext(instance, task_id=0, kind="inbox", attempt=1, host=None)
    await process_inbox.handler(context, {"activity": activity, "recipient": None, "signer": activity["actor"]})


async def seed_posts(instance: Instance, population: Population, total: int, rng: random.Random) -> dict[str, int]:
    """Store `total` posts and BOOSTS boosts as described in the module docstring; returns how many went which way."""
    followed = frozenset(population.followed)
    start = time.time() - SPAN_S
    step = SPAN_S / total
    boostable: list[str] = []
    boosts_at = sorted(rng.sample(range(total), BOOSTS))
    counts = {"posts_via_inbox_handler": 0, "posts_via_store_batches": 0, "boosts_via_inbox_handler": 0}
    batch: list[NewPost] = []
    for i in range(total):
        author = population.authors[i % len(population.authors)]
        published = start + i * step + rng.uniform(-step, step)
        doc = note_document(author, f"p{i}", rng, published)
        address(doc, rng, population)
        if i % THROUGH_HANDLER_EVERY == 0:
            await instance.db.write(_store_batch, batch, population.account_id, followed)
            counts["posts_via_store_batches"] += len(batch)
            batch = []
            await _through_handler(instance, create_activity(doc))
            counts["posts_via_inbox_handler"] += 1
        else:
            batch.append(note_fields(doc, f"{author}/followers"))
        if PUBLIC in doc["to"]:
            boostable.append(doc["id"])
        if boosts_at and boosts_at[0] == i:
            boosts_at.pop(0)
            await instance.db.write(_store_batch, batch, population.account_id, followed)
            counts["posts_via_store_batches"] += len(batch)
            batch = []
            booster = rng.choice(population.followed)
            announce = {
                "id": f"{booster}/statuses/boost{i}/activity", "type": "Announce", "actor": booster,
                "published": doc["published"], "to": [PUBLIC], "cc": [f"{booster}/followers"],
                "object": rng.choice(boostable),
            }  # fmt: skip
            await _through_handler(instance, announce)
            counts["boosts_via_inbox_handler"] += 1
        if len(batch) >= BATCH:
            await instance.db.write(_store_batch, batch, population.account_id, followed)
            counts["posts_via_store_batches"] += len(batch)
            batch = []
    await instance.db.write(_store_batch, batch, population.account_id, followed)
    counts["posts_via_store_batches"] += len(batch)
    return counts


def _seed_population(conn: Any, population: Population) -> None:
    seed_remote_actors(conn, population.authors, population.me, population.followed)
    for blocked in population.blocked:
        fq.put_block(conn, population.me, blocked, f"{population.me}#blocks/{blocked}")


# --------------------------------------------------------------- reading pages


@dataclass(frozen=True)
class PageRead:
    kind: str  # "first", "scroll" or "deep"
    max_id: int | None


def page_plan(reads: int, entry_ids: list[int], rng: random.Random) -> list[PageRead]:
    """60 % first pages, 30 % the next page of a scroll, 10 % a random depth (fixed by `rng`)."""
    plan = []
    scroll_at = 0
    for i in range(reads):
        slot = i % 10
        if slot < 6:
            plan.append(PageRead("first", None))
            scroll_at = 0
        elif slot < 9:
            scroll_at += PAGE
            plan.append(PageRead("scroll", entry_ids[scroll_at - 1]))
        else:
            plan.append(PageRead("deep", entry_ids[rng.randrange(PAGE, len(entry_ids) - 2 * PAGE)]))
    return plan


def check_page(items: list[pq.TimelineItem], read: PageRead, blocked: frozenset[str]) -> None:
    ids = [item.entry_id for item in items]
    if len(items) != PAGE or ids != sorted(ids, reverse=True) or (read.max_id and ids[0] >= read.max_id):
        raise BenchError(f"a {read.kind} page (max_id {read.max_id}) came back wrong: {len(items)} entries, {ids[:3]}…")
    if any(item.post.author in blocked or item.boosted_by in blocked for item in items):
        raise BenchError("a page shows a blocked author")


def summarize(latencies_ms: list[float]) -> dict[str, float]:
    ordered = sorted(latencies_ms)

    def at(fraction: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 3)

    return {
        "reads": len(ordered),
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "max_ms": round(ordered[-1], 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
    }


def by_kind(plan: list[PageRead], latencies_ms: list[float]) -> dict[str, dict[str, float]]:
    result = {"all": summarize(latencies_ms)}
    for kind in ("first", "scroll", "deep"):
        result[kind] = summarize([ms for read, ms in zip(plan, latencies_ms, strict=True) if read.kind == kind])
    return result


async def read_through_action(instance: Instance, plan: list[PageRead], blocked: frozenset[str]) -> list[float]:
    """Latency of `posts.timeline` (the action layer) for each read of `plan`, in ms."""
    latencies = []
    for read in plan:
        started = time.perf_counter()
        items = await posts.timeline(instance, READER, "home", limit=PAGE, max_id=read.max_id)
        latencies.append((time.perf_counter() - started) * 1000)
        check_page(items, read, blocked)
    return latencies


def read_bare_query(database: Path, population: Population, plan: list[PageRead], blocked: frozenset[str]) -> list[float]:
    """Latency of `store.posts.home_page` alone on one read-only connection, in ms."""
    conn = connect(database, readonly=True)
    latencies = []
    try:
        for read in plan:
            started = time.perf_counter()
            items = pq.home_page(conn, population.account_id, population.me, limit=PAGE, max_id=read.max_id)
            latencies.append((time.perf_counter() - started) * 1000)
            check_page(items, read, blocked)
    finally:
        conn.close()
    return latencies


def _home_entry_ids(conn: Any, account_id: int) -> list[int]:
    return [r[0] for r in conn.execute("SELECT entry_id FROM home_entries WHERE account_id = ? ORDER BY entry_id DESC", (account_id,))]


def _population(account_id: int, me: str) -> Population:
    authors = [remote_actor_uri(i) for i in range(FOLLOWED + NOT_FOLLOWED)]
    others = authors[FOLLOWED:]
    return Population(me, account_id, authors[:FOLLOWED], others, others[:BLOCKED])


async def seed(data_dir: Path, total_posts: int, rng: random.Random) -> tuple[Population, dict[str, int], float]:
    """Fill the install; closing it afterwards runs PRAGMA optimize, as every server stop does."""
    async with opened_install(data_dir, READER) as (instance, account):
        population = _population(account.id, instance.urls.actor(account))
        await instance.db.write(_seed_population, population)
        progress(f"timeline: storing {total_posts} posts by {len(population.authors)} authors")
        started = time.perf_counter()
        counts = await seed_posts(instance, population, total_posts, rng)
        return population, counts, time.perf_counter() - started


async def measure(data_dir: Path, total_posts: int, reads: int, seed_value: int) -> dict[str, object]:
    rng = random.Random(seed_value)
    population, counts, seeding_s = await seed(data_dir, total_posts, rng)
    # Read from a freshly opened install, as a server restarted on these posts would.
    async with opened_install(data_dir, READER) as (instance, _):
        entry_ids = await instance.db.read(_home_entry_ids, population.account_id)
        stored = await instance.db.read(lambda c: c.execute("SELECT count(*) FROM posts").fetchone()[0])
        if stored != total_posts:
            raise BenchError(f"{stored} posts stored, expected {total_posts}")
        plan = page_plan(reads, entry_ids, rng)
        blocked = frozenset(population.blocked)
        progress(f"timeline: {reads} page reads through posts.timeline, then the bare query")
        with on_cpu(SERVER_CPU):
            await read_through_action(instance, plan[:20], blocked)  # warm the page cache and the readers
            action_ms = await read_through_action(instance, plan, blocked)
            query_ms = read_bare_query(instance.settings.database_path, population, plan, blocked)
        database_mb = instance.settings.database_path.stat().st_size / 1e6
    action = by_kind(plan, action_ms)
    return {
        "posts": total_posts,
        "followed": FOLLOWED,
        "not_followed": NOT_FOLLOWED,
        "blocked": BLOCKED,
        "home_entries": len(entry_ids),
        "seeded": counts,
        "seeding_s": round(seeding_s, 1),
        "database_mb": round(database_mb, 1),
        "cpu_pinning": f"this process on CPU {SERVER_CPU} while reading (os.sched_setaffinity)",
        "page_size": PAGE,
        "posts_timeline": action,
        "home_page_query": by_kind(plan, query_ms),
        "p50_ms": action["all"]["p50_ms"],
        "p99_ms": action["all"]["p99_ms"],
        "goal_p99_ms": GOAL_P99_MS,
        "goal_met": action["all"]["p99_ms"] <= GOAL_P99_MS,
    }


def run(work_dir: Path, total_posts: int = 50_000, reads: int = 1000, seed_value: int = 1) -> dict[str, object]:
    """Build the install in `work_dir` and measure `reads` home timeline pages."""
    data_dir = work_dir / "timeline-data"
    progress("timeline: preparing an install with the CLI")
    prepare_data_dir(data_dir)
    return asyncio.run(measure(data_dir, total_posts, reads, seed_value))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=50_000, help="posts stored before reading")
    parser.add_argument("--reads", type=int, default=1000, help="timeline pages read")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="microfedi-bench-") as tmp:
        result = run(Path(tmp), args.posts, args.reads)
    print(json.dumps({"machine": machine_info(), "timeline": result}, indent=2))


if __name__ == "__main__":
    run_script(main)
