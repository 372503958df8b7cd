"""Removing accounts tells their followers' servers: user remove and domain remove --force."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

from click.testing import Result

from microfedi.config import DATABASE_FILE
from microfedi.store import federation as fq
from microfedi.store.database import Database

FOLLOWER = "https://peer.test/users/pat"


def follower_of(data_dir: Path, actor: str) -> None:
    """A remote follower with its own shared inbox, as the inbox would have stored it."""
    fields = {
        "host": "peer.test", "type": "Person", "username": "pat", "name": "", "summary": "", "url": None,
        "inbox": f"{FOLLOWER}/inbox", "shared_inbox": "https://peer.test/inbox", "outbox": None,
        "followers": None, "following": None, "icon_url": None, "header_url": None,
        "key_id": f"{FOLLOWER}#main-key", "public_key_pem": None, "manually_approves": False,
        "also_known_as": [], "moved_to": None,
    }  # fmt: skip
    with Database(data_dir / DATABASE_FILE) as db:
        db.write_sync(fq.upsert_remote_actor, FOLLOWER, fields, "peer.test")
        db.write_sync(fq.put_follow, FOLLOWER, actor, "accepted", f"{FOLLOWER}/follows/1")


def queued_deletes(data_dir: Path) -> list[tuple[str, str]]:
    """(inbox, deleted object) of every queued delivery of a Delete."""
    with sqlite3.connect(data_dir / DATABASE_FILE) as conn:
        rows = conn.execute(
            "SELECT json_extract(t.payload, '$.inbox'), a.document FROM tasks t "
            "JOIN activities a ON a.id = json_extract(t.payload, '$.activity') "
            "WHERE t.kind = 'deliver' AND a.type = 'Delete'"
        ).fetchall()
    return [(inbox, json.loads(document)["object"]) for inbox, document in rows]


def test_user_remove_queues_a_delete_for_followers(cli: Callable[..., Result], data_dir: Path) -> None:
    for args in (("init",), ("domain", "add", "alice.test"), ("user", "add", "alice@alice.test")):
        assert cli(*args).exit_code == 0
    follower_of(data_dir, "https://alice.test/@alice")
    result = cli("user", "remove", "alice@alice.test", "--yes")
    assert result.exit_code == 0, result.output
    assert queued_deletes(data_dir) == [("https://peer.test/inbox", "https://alice.test/@alice")]


def test_domain_remove_force_queues_a_delete_per_user(cli: Callable[..., Result], data_dir: Path) -> None:
    for args in (("init",), ("domain", "add", "alice.test"), ("user", "add", "alice@alice.test"), ("user", "add", "ann@alice.test")):
        assert cli(*args).exit_code == 0
    follower_of(data_dir, "https://alice.test/@alice")
    follower_of(data_dir, "https://alice.test/@ann")
    result = cli("domain", "remove", "alice.test", "--force")
    assert result.exit_code == 0, result.output
    assert "2 user(s)" in result.output
    assert sorted(queued_deletes(data_dir)) == [
        ("https://peer.test/inbox", "https://alice.test/@alice"),
        ("https://peer.test/inbox", "https://alice.test/@ann"),
    ]
