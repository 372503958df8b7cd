"""Queries for posts, edits, likes, boosts, timelines, notifications and reports."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

from microfedi.store.ids import id_at, new_id

VISIBILITIES = ("public", "unlisted", "private", "direct")
_JSON_COLUMNS = ("recipients", "mentions", "hashtags", "emoji", "attachments")


@dataclass(frozen=True)
class Post:
    id: int
    uri: str
    url: str | None
    author: str
    account_id: int | None
    type: str
    visibility: str
    in_reply_to: str | None
    conversation: str
    summary: str
    sensitive: bool
    content: str
    source: str | None
    language: str | None
    published: float
    updated: float | None
    recipients: list[str]
    mentions: list[dict[str, str]]
    hashtags: list[str]
    emoji: list[dict[str, str]]
    attachments: list[dict[str, Any]]
    poll: dict[str, Any] | None
    reply_count: int
    like_count: int
    boost_count: int
    pinned: bool
    received_at: float
    deleted_at: float | None

    @property
    def local(self) -> bool:
        return self.account_id is not None


def _post(row: sqlite3.Row) -> Post:
    return _post_from_values(dict(row))


@dataclass
class NewPost:
    """What is needed to store a post (the store fills in counters and times)."""

    uri: str
    author: str
    type: str
    visibility: str
    conversation: str
    published: float
    content: str = ""
    summary: str = ""
    sensitive: bool = False
    url: str | None = None
    account_id: int | None = None
    in_reply_to: str | None = None
    source: str | None = None
    language: str | None = None
    updated: float | None = None
    recipients: list[str] = field(default_factory=list)
    mentions: list[dict[str, str]] = field(default_factory=list)
    hashtags: list[str] = field(default_factory=list)
    emoji: list[dict[str, str]] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    poll: dict[str, Any] | None = None
    id: int | None = None


def insert_post(conn: sqlite3.Connection, post: NewPost) -> tuple[int, bool]:
    """Store a post; (id, True) if new, (existing id, False) if its uri is known."""
    existing = conn.execute("SELECT id FROM posts WHERE uri = ?", (post.uri,)).fetchone()
    if existing:
        return existing[0], False
    now = time.time()
    # A reply sorts after its parent even when both were published within the
    # same second (ActivityStreams times are often whole seconds).
    parent = (
        conn.execute("SELECT id, conversation FROM posts WHERE uri = ?", (post.in_reply_to,)).fetchone()
        if post.in_reply_to
        else None
    )
    conversation = parent[1] if parent is not None else post.conversation
    for attempt in range(5):
        # Remote posts sort by publication time (never in the future); a clash
        # of random low bits on an old time is retried with fresh ones.
        post_id = post.id or id_at(min(post.published, now))
        if parent is not None and post_id <= parent[0] and not post.id:
            post_id = parent[0] + 1 + attempt
        if conn.execute("SELECT 1 FROM posts WHERE id = ?", (post_id,)).fetchone() is None:
            break
    conn.execute(
        "INSERT INTO posts (id, uri, url, author, account_id, type, visibility, in_reply_to, conversation, "
        "summary, sensitive, content, source, language, published, updated, recipients, mentions, hashtags, "
        "emoji, attachments, poll, received_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            post_id, post.uri, post.url, post.author, post.account_id, post.type, post.visibility,
            post.in_reply_to, conversation, post.summary, int(post.sensitive), post.content, post.source,
            post.language, post.published, post.updated, json.dumps(post.recipients), json.dumps(post.mentions),
            json.dumps(post.hashtags), json.dumps(post.emoji), json.dumps(post.attachments),
            json.dumps(post.poll) if post.poll else None, now,
        ),
    )  # fmt: skip
    conn.executemany("INSERT OR IGNORE INTO post_tags (tag, post_id) VALUES (?, ?)", [(t, post_id) for t in post.hashtags])
    if post.in_reply_to:
        conn.execute("UPDATE posts SET reply_count = reply_count + 1 WHERE uri = ?", (post.in_reply_to,))
    # Replies stored before this post (fetched from the newest upward) join its thread.
    # Deduplicated and filtered here, not in SQL: DISTINCT or a `conversation !=`
    # term lures the planner off the in_reply_to index into a scan of every post.
    replies = conn.execute("SELECT conversation FROM posts INDEXED BY posts_reply WHERE in_reply_to = ?", (post.uri,))
    for orphaned in {row[0] for row in replies}:
        if orphaned != conversation:
            conn.execute("UPDATE posts SET conversation = ? WHERE conversation = ?", (conversation, orphaned))
    reply_count = conn.execute("SELECT count(*) FROM posts WHERE in_reply_to = ? AND deleted_at IS NULL", (post.uri,)).fetchone()[0]
    if reply_count:
        conn.execute("UPDATE posts SET reply_count = ? WHERE id = ?", (reply_count, post_id))
    return post_id, True


def get_post(conn: sqlite3.Connection, post_id: int) -> Post | None:
    row = conn.execute("SELECT * FROM posts WHERE id = ?", (post_id,)).fetchone()
    return _post(row) if row else None


def get_post_by_uri(conn: sqlite3.Connection, uri: str) -> Post | None:
    row = conn.execute("SELECT * FROM posts WHERE uri = ?", (uri,)).fetchone()
    return _post(row) if row else None


def update_post(
    conn: sqlite3.Connection, post_id: int, *, content: str, summary: str, sensitive: bool, updated: float,
    mentions: list[dict[str, str]], hashtags: list[str], attachments: list[dict[str, Any]],
    poll: dict[str, Any] | None, source: str | None = None,
) -> None:  # fmt: skip
    """Apply an edit, keeping the previous version in post_edits."""
    old = conn.execute("SELECT summary, content, sensitive, coalesce(updated, published) FROM posts WHERE id = ?", (post_id,)).fetchone()
    conn.execute(
        "INSERT INTO post_edits (id, post_id, summary, content, sensitive, edited_at) VALUES (?, ?, ?, ?, ?, ?)",
        (new_id(), post_id, old[0], old[1], old[2], old[3]),
    )
    conn.execute(
        "UPDATE posts SET content = ?, summary = ?, sensitive = ?, updated = ?, mentions = ?, hashtags = ?, "
        "attachments = ?, poll = ?, source = coalesce(?, source) WHERE id = ?",
        (content, summary, int(sensitive), updated, json.dumps(mentions), json.dumps(hashtags),
         json.dumps(attachments), json.dumps(poll) if poll else None, source, post_id),
    )  # fmt: skip
    conn.execute("DELETE FROM post_tags WHERE post_id = ?", (post_id,))
    conn.executemany("INSERT OR IGNORE INTO post_tags (tag, post_id) VALUES (?, ?)", [(t, post_id) for t in hashtags])


def update_poll(conn: sqlite3.Connection, post_id: int, poll: dict[str, Any]) -> None:
    conn.execute("UPDATE posts SET poll = ? WHERE id = ?", (json.dumps(poll), post_id))


def post_edits(conn: sqlite3.Connection, post_id: int) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT summary, content, sensitive, edited_at FROM post_edits WHERE post_id = ? ORDER BY id", (post_id,))
    return [dict(r) for r in rows]


def delete_post(conn: sqlite3.Connection, post_id: int) -> None:
    """Tombstone a post: content gone, out of every timeline; the row keeps the uri."""
    row = conn.execute("SELECT in_reply_to, deleted_at FROM posts WHERE id = ?", (post_id,)).fetchone()
    if row is None or row[1] is not None:
        return
    conn.execute(
        "UPDATE posts SET deleted_at = ?, content = '', summary = '', source = NULL, attachments = '[]', "
        "poll = NULL, mentions = '[]', hashtags = '[]', pinned = 0 WHERE id = ?",
        (time.time(), post_id),
    )
    conn.execute("DELETE FROM home_entries WHERE post_id = ?", (post_id,))
    conn.execute("DELETE FROM post_tags WHERE post_id = ?", (post_id,))
    conn.execute("DELETE FROM post_edits WHERE post_id = ?", (post_id,))
    conn.execute("DELETE FROM boosts WHERE post_id = ?", (post_id,))
    if row[0]:
        conn.execute("UPDATE posts SET reply_count = max(reply_count - 1, 0) WHERE uri = ?", (row[0],))


def set_pinned(conn: sqlite3.Connection, post_id: int, pinned: bool) -> None:
    conn.execute("UPDATE posts SET pinned = ? WHERE id = ?", (int(pinned), post_id))


def pinned_posts(conn: sqlite3.Connection, author: str) -> list[Post]:
    rows = conn.execute(
        "SELECT * FROM posts WHERE author = ? AND pinned = 1 AND deleted_at IS NULL ORDER BY id DESC", (author,)
    )
    return [_post(r) for r in rows]


def conversation_posts(conn: sqlite3.Connection, conversation: str, limit: int = 200) -> list[Post]:
    rows = conn.execute(
        # By publication: posts of a thread may have arrived in any order.
        "SELECT * FROM posts WHERE conversation = ? AND deleted_at IS NULL ORDER BY published, id LIMIT ?",
        (conversation, limit),
    )
    return [_post(r) for r in rows]


def author_posts(
    conn: sqlite3.Connection, author: str, visibilities: tuple[str, ...], *, limit: int, max_id: int | None = None
) -> list[Post]:
    """An author's posts of the given visibilities, newest first, paged by id."""
    marks = ",".join("?" for _ in visibilities)
    rows = conn.execute(
        f"SELECT * FROM posts WHERE author = ? AND visibility IN ({marks}) AND deleted_at IS NULL "
        "AND id < ? ORDER BY id DESC LIMIT ?",
        (author, *visibilities, max_id or (1 << 63) - 1, limit),
    )
    return [_post(r) for r in rows]


def count_author_posts(conn: sqlite3.Connection, author: str, visibilities: tuple[str, ...]) -> int:
    marks = ",".join("?" for _ in visibilities)
    return conn.execute(
        f"SELECT count(*) FROM posts WHERE author = ? AND visibility IN ({marks}) AND deleted_at IS NULL",
        (author, *visibilities),
    ).fetchone()[0]


def count_local_posts(conn: sqlite3.Connection, account_ids: list[int]) -> int:
    if not account_ids:
        return 0
    marks = ",".join("?" for _ in account_ids)
    return conn.execute(
        f"SELECT count(*) FROM posts WHERE account_id IN ({marks}) AND deleted_at IS NULL", account_ids
    ).fetchone()[0]


# ---------------------------------------------------------------- likes and boosts


def put_like(conn: sqlite3.Connection, uri: str, actor: str, post_id: int) -> bool:
    cursor = conn.execute(
        "INSERT OR IGNORE INTO likes (id, uri, actor, post_id, created_at) VALUES (?, ?, ?, ?, ?)",
        (new_id(), uri, actor, post_id, time.time()),
    )
    if cursor.rowcount:
        conn.execute("UPDATE posts SET like_count = like_count + 1 WHERE id = ?", (post_id,))
    return cursor.rowcount > 0


def delete_notifications_of(conn: sqlite3.Connection, activity: str) -> None:
    """Forget the notifications an activity caused (it was undone)."""
    conn.execute("DELETE FROM notifications WHERE activity = ?", (activity,))


def delete_like(conn: sqlite3.Connection, actor: str, post_id: int) -> bool:
    found = conn.execute("SELECT uri FROM likes WHERE actor = ? AND post_id = ?", (actor, post_id)).fetchone()
    if found is not None:
        delete_notifications_of(conn, found[0])
    cursor = conn.execute("DELETE FROM likes WHERE actor = ? AND post_id = ?", (actor, post_id))
    if cursor.rowcount:
        conn.execute("UPDATE posts SET like_count = max(like_count - 1, 0) WHERE id = ?", (post_id,))
    return cursor.rowcount > 0


def find_like(conn: sqlite3.Connection, *, uri: str | None = None, actor: str | None = None, post_id: int | None = None) -> tuple[str, str, int] | None:
    """(uri, actor, post_id) of a like, by its uri or by (actor, post)."""
    if uri is not None:
        row = conn.execute("SELECT uri, actor, post_id FROM likes WHERE uri = ?", (uri,)).fetchone()
    else:
        row = conn.execute("SELECT uri, actor, post_id FROM likes WHERE actor = ? AND post_id = ?", (actor, post_id)).fetchone()
    return (row[0], row[1], row[2]) if row else None


@dataclass(frozen=True)
class Boost:
    id: int
    uri: str
    actor: str
    post_id: int
    visibility: str
    created_at: float


def put_boost(conn: sqlite3.Connection, uri: str, actor: str, post_id: int, visibility: str, when: float | None = None) -> tuple[Boost, bool]:
    """Record a boost; (boost, True) if new."""
    existing = conn.execute("SELECT * FROM boosts WHERE uri = ? OR (actor = ? AND post_id = ?)", (uri, actor, post_id)).fetchone()
    if existing:
        return Boost(**dict(existing)), False
    now = time.time()
    boost = Boost(id_at(min(when or now, now)), uri, actor, post_id, visibility, now)
    conn.execute(
        "INSERT INTO boosts (id, uri, actor, post_id, visibility, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (boost.id, uri, actor, post_id, visibility, now),
    )
    conn.execute("UPDATE posts SET boost_count = boost_count + 1 WHERE id = ?", (post_id,))
    return boost, True


def find_boost(conn: sqlite3.Connection, *, uri: str | None = None, actor: str | None = None, post_id: int | None = None) -> Boost | None:
    if uri is not None:
        row = conn.execute("SELECT * FROM boosts WHERE uri = ?", (uri,)).fetchone()
    else:
        row = conn.execute("SELECT * FROM boosts WHERE actor = ? AND post_id = ?", (actor, post_id)).fetchone()
    return Boost(**dict(row)) if row else None


def delete_boost(conn: sqlite3.Connection, boost_id: int) -> None:
    row = conn.execute("SELECT post_id, uri FROM boosts WHERE id = ?", (boost_id,)).fetchone()
    if row is None:
        return
    delete_notifications_of(conn, row[1])
    conn.execute("DELETE FROM home_entries WHERE boost_id = ?", (boost_id,))
    conn.execute("DELETE FROM boosts WHERE id = ?", (boost_id,))
    conn.execute("UPDATE posts SET boost_count = max(boost_count - 1, 0) WHERE id = ?", (row[0],))


def boosters_of(conn: sqlite3.Connection, post_id: int) -> list[str]:
    return [r[0] for r in conn.execute("SELECT actor FROM boosts WHERE post_id = ?", (post_id,))]


# ---------------------------------------------------------------- timelines


def add_home_entries(conn: sqlite3.Connection, account_ids: list[int], entry_id: int, post_id: int, boost_id: int | None = None) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO home_entries (account_id, entry_id, post_id, boost_id) VALUES (?, ?, ?, ?)",
        [(account_id, entry_id, post_id, boost_id) for account_id in account_ids],
    )


def remove_home_entries_of_author(conn: sqlite3.Connection, account_id: int, author: str) -> None:
    """Drop an author's posts and boosts from one home timeline (after an unfollow or block)."""
    conn.execute(
        "DELETE FROM home_entries WHERE account_id = ? AND ("
        "post_id IN (SELECT id FROM posts WHERE author = ?) OR boost_id IN (SELECT id FROM boosts WHERE actor = ?))",
        (account_id, author, author),
    )


@dataclass(frozen=True)
class TimelineItem:
    entry_id: int
    post: Post
    boosted_by: str | None = None


def home_page(conn: sqlite3.Connection, account_id: int, me: str, *, limit: int = 40, max_id: int | None = None) -> list[TimelineItem]:
    """A page of a home timeline, newest first; blocked authors and boosters left out."""
    rows = conn.execute(
        "SELECT h.entry_id AS entry_id, b.actor AS booster, p.* FROM home_entries h "
        "JOIN posts p ON p.id = h.post_id LEFT JOIN boosts b ON b.id = h.boost_id "
        "WHERE h.account_id = ? AND h.entry_id < ? AND p.deleted_at IS NULL "
        "AND NOT EXISTS (SELECT 1 FROM blocks k WHERE k.blocker = ? AND (k.blocked = p.author OR k.blocked = b.actor)) "
        "ORDER BY h.entry_id DESC LIMIT ?",
        (account_id, max_id or (1 << 63) - 1, me, limit),
    )
    return [_timeline_item(r) for r in rows]


def _timeline_item(row: sqlite3.Row) -> TimelineItem:
    values = dict(row)
    entry_id, booster = values.pop("entry_id"), values.pop("booster", None)
    return TimelineItem(entry_id, _post_from_values(values), booster)


def _post_from_values(values: dict[str, Any]) -> Post:
    for name in _JSON_COLUMNS:
        values[name] = json.loads(values[name])
    values["poll"] = json.loads(values["poll"]) if values["poll"] else None
    values["sensitive"] = bool(values["sensitive"])
    values["pinned"] = bool(values["pinned"])
    return Post(**values)


def public_page(
    conn: sqlite3.Connection, *, local_only: bool, me: str | None = None, tag: str | None = None,
    limit: int = 40, max_id: int | None = None,
) -> list[TimelineItem]:  # fmt: skip
    """Public posts (local, federated, or one hashtag), newest first."""
    clauses = ["p.visibility = 'public'", "p.deleted_at IS NULL", "p.id < ?"]
    params: list[Any] = [max_id or (1 << 63) - 1]
    if local_only:
        clauses.append("p.account_id IS NOT NULL")
    if tag is not None:
        clauses.append("p.id IN (SELECT post_id FROM post_tags WHERE tag = ?)")
        params.append(tag)
    if me is not None:
        clauses.append("NOT EXISTS (SELECT 1 FROM blocks k WHERE k.blocker = ? AND k.blocked = p.author)")
        params.append(me)
    rows = conn.execute(
        f"SELECT p.id AS entry_id, p.* FROM posts p WHERE {' AND '.join(clauses)} ORDER BY p.id DESC LIMIT ?",
        (*params, limit),
    )
    return [_timeline_item(r) for r in rows]


# ---------------------------------------------------------------- notifications


def add_notification(conn: sqlite3.Connection, account_id: int, kind: str, actor: str, activity: str, post_id: int | None = None) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO notifications (id, account_id, type, actor, post_id, activity, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (new_id(), account_id, kind, actor, post_id, activity, time.time()),
    )


@dataclass(frozen=True)
class Notification:
    id: int
    type: str
    actor: str
    post_id: int | None
    created_at: float


def list_notifications(conn: sqlite3.Connection, account_id: int, *, limit: int = 40, max_id: int | None = None) -> list[Notification]:
    rows = conn.execute(
        "SELECT id, type, actor, post_id, created_at FROM notifications WHERE account_id = ? AND id < ? "
        "ORDER BY id DESC LIMIT ?",
        (account_id, max_id or (1 << 63) - 1, limit),
    )
    return [Notification(**dict(r)) for r in rows]


# ---------------------------------------------------------------- reports


def insert_report(conn: sqlite3.Connection, uri: str, reporter: str, targets: list[str], content: str) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO reports (id, uri, reporter, targets, content, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (new_id(), uri, reporter, json.dumps(targets), content, time.time()),
    )


def list_reports(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT uri, reporter, targets, content, created_at FROM reports ORDER BY id DESC")
    return [{**dict(r), "targets": json.loads(r["targets"])} for r in rows]
