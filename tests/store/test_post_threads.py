"""Posts in the store: threads stay together whatever order their posts arrive in."""

from __future__ import annotations

import time

from microfedi.store import posts as pq
from microfedi.store.database import Database
from microfedi.store.posts import NewPost


def note(uri: str, parent: str | None = None, published: float | None = None) -> NewPost:
    return NewPost(
        uri=uri, author="https://peer.test/users/pat", type="Note", visibility="public",
        conversation=uri if parent is None else parent, published=published or time.time(), in_reply_to=parent,
    )  # fmt: skip


async def test_a_parent_stored_after_its_replies_gathers_the_thread(db: Database) -> None:
    # Fetched from the newest upward: the grandchild first, then its parent, then the root.
    start = time.time() - 600
    await db.write(pq.insert_post, note("https://peer.test/3", parent="https://peer.test/2", published=start + 20))
    await db.write(pq.insert_post, note("https://peer.test/2", parent="https://peer.test/1", published=start + 10))
    await db.write(pq.insert_post, note("https://peer.test/1", published=start))
    posts = [await db.read(pq.get_post_by_uri, f"https://peer.test/{n}") for n in (1, 2, 3)]
    assert {p.conversation for p in posts} == {"https://peer.test/1"}
    assert [p.uri for p in await db.read(pq.conversation_posts, "https://peer.test/1")] == sorted(p.uri for p in posts)
    assert posts[0].reply_count == 1 and posts[1].reply_count == 1


async def test_a_reply_in_the_same_second_sorts_after_its_parent(db: Database) -> None:
    second = float(int(time.time()) - 60)
    parent_id, _ = await db.write(pq.insert_post, note("https://peer.test/a", published=second + 0.9))
    # The reply says the same whole second, earlier than the parent's fraction.
    reply_id, _ = await db.write(pq.insert_post, note("https://peer.test/b", parent="https://peer.test/a", published=second))
    assert reply_id > parent_id
