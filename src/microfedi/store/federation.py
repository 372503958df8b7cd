"""Queries for remote actors, follows, blocks, inbox deduplication and activities."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, TypeVar

from microfedi.store.ids import new_id

T = TypeVar("T")


@dataclass(frozen=True)
class RemoteActor:
    id: int
    uri: str
    host: str
    type: str
    username: str
    acct_domain: str | None
    name: str
    summary: str
    url: str | None
    inbox: str
    shared_inbox: str | None
    outbox: str | None
    followers: str | None
    following: str | None
    icon_url: str | None
    header_url: str | None
    key_id: str | None
    public_key_pem: str | None
    manually_approves: bool
    also_known_as: tuple[str, ...]
    moved_to: str | None
    fetched_at: float
    deleted_at: float | None

    @property
    def handle(self) -> str:
        """user@domain: the verified WebFinger domain if known, else the URL host."""
        return f"{self.username}@{self.acct_domain or self.host}"

    @property
    def delivery_inbox(self) -> str:
        """Where to deliver: the shared inbox when it has one (one request per server)."""
        return self.shared_inbox or self.inbox


def _remote_actor(row: sqlite3.Row) -> RemoteActor:
    values = dict(row)
    values.pop("created_at")
    values["manually_approves"] = bool(values["manually_approves"])
    values["also_known_as"] = tuple(json.loads(values["also_known_as"]))
    return RemoteActor(**values)


REMOTE_ACTOR_FIELDS = (
    "host", "type", "username", "name", "summary", "url", "inbox", "shared_inbox", "outbox",
    "followers", "following", "icon_url", "header_url", "key_id", "public_key_pem",
    "manually_approves", "also_known_as", "moved_to",
)  # fmt: skip


def upsert_remote_actor(conn: sqlite3.Connection, uri: str, values: dict[str, Any], acct_domain: str | None) -> RemoteActor:
    """Insert or refresh a remote actor from validated fields (see federation.remote)."""
    now = time.time()
    row = {name: values.get(name) for name in REMOTE_ACTOR_FIELDS}
    row["manually_approves"] = int(bool(row["manually_approves"]))
    row["also_known_as"] = json.dumps(list(row["also_known_as"] or []))
    columns = ", ".join(REMOTE_ACTOR_FIELDS)
    marks = ", ".join("?" for _ in REMOTE_ACTOR_FIELDS)
    updates = ", ".join(f"{name} = excluded.{name}" for name in REMOTE_ACTOR_FIELDS)
    conn.execute(
        f"INSERT INTO remote_actors (id, uri, acct_domain, fetched_at, created_at, {columns}) "
        f"VALUES (?, ?, ?, ?, ?, {marks}) "
        f"ON CONFLICT (uri) DO UPDATE SET {updates}, fetched_at = excluded.fetched_at, "
        "acct_domain = coalesce(excluded.acct_domain, remote_actors.acct_domain), deleted_at = NULL",
        (new_id(), uri, acct_domain, now, now, *row.values()),
    )
    actor = get_remote_actor(conn, uri)
    assert actor is not None
    return actor


def get_remote_actor(conn: sqlite3.Connection, uri: str) -> RemoteActor | None:
    row = conn.execute("SELECT * FROM remote_actors WHERE uri = ?", (uri,)).fetchone()
    return _remote_actor(row) if row else None


def get_remote_actors(conn: sqlite3.Connection, uris: list[str]) -> dict[str, RemoteActor]:
    found: dict[str, RemoteActor] = {}
    for start in range(0, len(uris), 500):
        chunk = uris[start : start + 500]
        marks = ",".join("?" for _ in chunk)
        for row in conn.execute(f"SELECT * FROM remote_actors WHERE uri IN ({marks})", chunk):
            found[row["uri"]] = _remote_actor(row)
    return found


def find_remote_actor_by_key(conn: sqlite3.Connection, key_id: str) -> RemoteActor | None:
    row = conn.execute(
        "SELECT * FROM remote_actors WHERE key_id = ? AND deleted_at IS NULL ORDER BY fetched_at DESC LIMIT 1",
        (key_id,),
    ).fetchone()
    return _remote_actor(row) if row else None


def find_remote_actor_by_handle(conn: sqlite3.Connection, username: str, domain: str) -> RemoteActor | None:
    row = conn.execute(
        "SELECT * FROM remote_actors WHERE username = ? AND acct_domain = ? AND deleted_at IS NULL "
        "ORDER BY fetched_at DESC LIMIT 1",
        (username, domain),
    ).fetchone()
    return _remote_actor(row) if row else None


def mark_remote_actor_deleted(conn: sqlite3.Connection, uri: str) -> None:
    """A remote account is gone: its follows, boosts and posts go with it."""
    now = time.time()
    conn.execute("UPDATE remote_actors SET deleted_at = ? WHERE uri = ?", (now, uri))
    conn.execute("DELETE FROM follows WHERE follower = ? OR followee = ?", (uri, uri))
    conn.execute("DELETE FROM home_entries WHERE post_id IN (SELECT id FROM posts WHERE author = ?)", (uri,))
    conn.execute("DELETE FROM home_entries WHERE boost_id IN (SELECT id FROM boosts WHERE actor = ?)", (uri,))
    conn.execute("DELETE FROM boosts WHERE actor = ?", (uri,))
    conn.execute(
        "UPDATE posts SET deleted_at = ?, content = '', summary = '', attachments = '[]', poll = NULL "
        "WHERE author = ? AND deleted_at IS NULL",
        (now, uri),
    )


def set_moved_to(conn: sqlite3.Connection, uri: str, target: str) -> None:
    conn.execute("UPDATE remote_actors SET moved_to = ? WHERE uri = ?", (target, uri))


def stale_remote_actors(conn: sqlite3.Connection, older_than: float, limit: int) -> list[str]:
    """URIs of live remote actors fetched before `older_than` that someone here follows or is followed by."""
    rows = conn.execute(
        "SELECT uri FROM remote_actors r WHERE deleted_at IS NULL AND fetched_at < ? AND "
        "EXISTS (SELECT 1 FROM follows f WHERE f.follower = r.uri OR f.followee = r.uri) "
        "ORDER BY fetched_at LIMIT ?",
        (older_than, limit),
    )
    return [r[0] for r in rows]


# ---------------------------------------------------------------- follows


@dataclass(frozen=True)
class Follow:
    id: int
    follower: str
    followee: str
    state: str
    activity_id: str
    created_at: float
    accepted_at: float | None


def get_follow(conn: sqlite3.Connection, follower: str, followee: str) -> Follow | None:
    row = conn.execute(
        "SELECT * FROM follows WHERE follower = ? AND followee = ?", (follower, followee)
    ).fetchone()
    return Follow(**dict(row)) if row else None


def find_follow_by_activity(conn: sqlite3.Connection, activity_id: str) -> Follow | None:
    row = conn.execute("SELECT * FROM follows WHERE activity_id = ?", (activity_id,)).fetchone()
    return Follow(**dict(row)) if row else None


def put_follow(conn: sqlite3.Connection, follower: str, followee: str, state: str, activity_id: str) -> Follow:
    """Record a follow (or update its state and activity id if it exists)."""
    now = time.time()
    conn.execute(
        "INSERT INTO follows (id, follower, followee, state, activity_id, created_at, accepted_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (follower, followee) DO UPDATE SET "
        "state = excluded.state, activity_id = excluded.activity_id, "
        "accepted_at = CASE WHEN excluded.state = 'accepted' THEN coalesce(follows.accepted_at, excluded.accepted_at) END",
        (new_id(), follower, followee, state, activity_id, now, now if state == "accepted" else None),
    )
    follow = get_follow(conn, follower, followee)
    assert follow is not None
    return follow


def accept_follow(conn: sqlite3.Connection, follow_id: int) -> None:
    conn.execute(
        "UPDATE follows SET state = 'accepted', accepted_at = coalesce(accepted_at, ?) WHERE id = ?",
        (time.time(), follow_id),
    )


def delete_follow(conn: sqlite3.Connection, follower: str, followee: str) -> bool:
    cursor = conn.execute("DELETE FROM follows WHERE follower = ? AND followee = ?", (follower, followee))
    return cursor.rowcount > 0


def list_follows(
    conn: sqlite3.Connection, *, follower: str | None = None, followee: str | None = None,
    state: str | None = None, limit: int = 1000, before_id: int | None = None, offset: int = 0,
) -> list[Follow]:  # fmt: skip
    """Follows of one side, newest first, paged by id or by offset."""
    clauses, params = [], []
    for column, value in (("follower", follower), ("followee", followee), ("state", state)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if before_id is not None:
        clauses.append("id < ?")
        params.append(before_id)
    where = " AND ".join(clauses) or "1"
    rows = conn.execute(
        f"SELECT * FROM follows WHERE {where} ORDER BY id DESC LIMIT ? OFFSET ?", (*params, limit, offset)
    )
    return [Follow(**dict(r)) for r in rows]


def count_follows(conn: sqlite3.Connection, *, follower: str | None = None, followee: str | None = None, state: str = "accepted") -> int:
    column, value = ("follower", follower) if follower is not None else ("followee", followee)
    return conn.execute(
        f"SELECT count(*) FROM follows WHERE {column} = ? AND state = ?", (value, state)
    ).fetchone()[0]


def local_followers(conn: sqlite3.Connection, followee: str, local: dict[str, T]) -> list[T]:
    """`local[uri]` for each local actor URI in `local` with an accepted follow of
    `followee` and no block of it: whose home timelines its posts and boosts reach."""
    if not local:
        return []
    uris = list(local)
    marks = ",".join("?" for _ in uris)
    rows = conn.execute(
        f"SELECT f.follower FROM follows f WHERE f.followee = ? AND f.state = 'accepted' AND f.follower IN ({marks}) "
        "AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.blocker = f.follower AND b.blocked = f.followee)",
        (followee, *uris),
    )
    return [local[r[0]] for r in rows]


def follower_inboxes(conn: sqlite3.Connection, followee: str) -> list[str]:
    """Distinct delivery inboxes (shared when known) of a local actor's accepted remote followers."""
    rows = conn.execute(
        "SELECT DISTINCT coalesce(r.shared_inbox, r.inbox) FROM follows f "
        "JOIN remote_actors r ON r.uri = f.follower "
        "WHERE f.followee = ? AND f.state = 'accepted' AND r.deleted_at IS NULL",
        (followee,),
    )
    return [r[0] for r in rows]


# ---------------------------------------------------------------- blocks


def put_block(conn: sqlite3.Connection, blocker: str, blocked: str, activity_id: str) -> None:
    conn.execute(
        "INSERT INTO blocks (id, blocker, blocked, activity_id, created_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (blocker, blocked) DO UPDATE SET activity_id = excluded.activity_id",
        (new_id(), blocker, blocked, activity_id, time.time()),
    )


def delete_block(conn: sqlite3.Connection, blocker: str, blocked: str) -> bool:
    cursor = conn.execute("DELETE FROM blocks WHERE blocker = ? AND blocked = ?", (blocker, blocked))
    return cursor.rowcount > 0


def block_activity(conn: sqlite3.Connection, blocker: str, blocked: str) -> str | None:
    """The id of the Block activity, if `blocker` blocks `blocked`."""
    row = conn.execute(
        "SELECT activity_id FROM blocks WHERE blocker = ? AND blocked = ?", (blocker, blocked)
    ).fetchone()
    return row[0] if row else None


def is_blocked(conn: sqlite3.Connection, blocker: str, blocked: str) -> bool:
    return conn.execute(
        "SELECT 1 FROM blocks WHERE blocker = ? AND blocked = ?", (blocker, blocked)
    ).fetchone() is not None


def blocked_by(conn: sqlite3.Connection, blocker: str) -> list[str]:
    return [r[0] for r in conn.execute("SELECT blocked FROM blocks WHERE blocker = ? ORDER BY id", (blocker,))]


# ---------------------------------------------------------------- inbox


def mark_seen(conn: sqlite3.Connection, activity_id: str) -> bool:
    """Record an incoming activity id; False if it was seen before."""
    cursor = conn.execute(
        "INSERT OR IGNORE INTO inbox_seen (activity_id, received_at) VALUES (?, ?)", (activity_id, time.time())
    )
    return cursor.rowcount > 0


def purge_seen(conn: sqlite3.Connection, older_than: float) -> int:
    return conn.execute("DELETE FROM inbox_seen WHERE received_at < ?", (older_than,)).rowcount


# ---------------------------------------------------------------- activities


def insert_activity(conn: sqlite3.Connection, uri: str, account_id: int, document: dict[str, Any]) -> int:
    row_id = new_id()
    conn.execute(
        "INSERT INTO activities (id, uri, account_id, type, document, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (row_id, uri, account_id, document["type"], json.dumps(document, separators=(",", ":")), time.time()),
    )
    return row_id


def get_activity(conn: sqlite3.Connection, row_id: int) -> tuple[int, str] | None:
    """(account id, JSON document) of a published activity."""
    row = conn.execute("SELECT account_id, document FROM activities WHERE id = ?", (row_id,)).fetchone()
    return (row[0], row[1]) if row else None


def get_activity_by_uri(conn: sqlite3.Connection, uri: str) -> tuple[int, str] | None:
    row = conn.execute("SELECT account_id, document FROM activities WHERE uri = ?", (uri,)).fetchone()
    return (row[0], row[1]) if row else None
