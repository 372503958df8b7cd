"""Queries for domains, accounts and instance actors (the routing directory)."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass

from microfedi.store.ids import new_id


@dataclass(frozen=True)
class DomainRow:
    id: int
    domain: str
    service_domain: str | None
    created_at: float

    @property
    def url_host(self) -> str:
        """The host serving this domain's actor and object URLs."""
        return self.service_domain or self.domain


@dataclass(frozen=True)
class AccountRow:
    id: int
    username: str
    domain: str
    host: str
    display_name: str
    summary: str
    is_admin: bool
    locked: bool
    discoverable: bool
    public_key_pem: str
    also_known_as: tuple[str, ...]
    fields: tuple[tuple[str, str], ...]
    avatar_url: str | None
    header_url: str | None
    created_at: float
    updated_at: float
    deleted_at: float | None
    moved_to: str | None = None

    @property
    def handle(self) -> str:
        return f"{self.username}@{self.domain}"


_ACCOUNT_COLUMNS = (
    "id, username, domain, host, display_name, summary, is_admin, locked, discoverable, "
    "public_key_pem, also_known_as, fields, avatar_url, header_url, created_at, updated_at, deleted_at, moved_to"
)


def _account(row: sqlite3.Row) -> AccountRow:
    return AccountRow(
        id=row["id"],
        username=row["username"],
        domain=row["domain"],
        host=row["host"],
        display_name=row["display_name"],
        summary=row["summary"],
        is_admin=bool(row["is_admin"]),
        locked=bool(row["locked"]),
        discoverable=bool(row["discoverable"]),
        public_key_pem=row["public_key_pem"],
        also_known_as=tuple(json.loads(row["also_known_as"])),
        fields=tuple((name, value) for name, value in json.loads(row["fields"])),
        avatar_url=row["avatar_url"],
        header_url=row["header_url"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        deleted_at=row["deleted_at"],
        moved_to=row["moved_to"],
    )


def _domain(row: sqlite3.Row) -> DomainRow:
    return DomainRow(row["id"], row["domain"], row["service_domain"], row["created_at"])


class LocalChanges:
    """Counts directory changes committed by this process.

    The in-memory directory checks this counter on every request (an integer
    comparison) and the database only every so often, so changes made here are
    seen at once and changes made by another process (the CLI) soon after.
    """

    count = 0

    @classmethod
    def note(cls, conn: sqlite3.Connection) -> None:
        conn.after_commit(cls._bump)  # type: ignore[attr-defined]

    @classmethod
    def _bump(cls) -> None:
        cls.count += 1


def directory_generation(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT value FROM meta WHERE key = 'directory_generation'").fetchone()[0])


def list_domains(conn: sqlite3.Connection) -> list[DomainRow]:
    return [_domain(r) for r in conn.execute("SELECT * FROM domains ORDER BY domain")]


def get_domain(conn: sqlite3.Connection, domain: str) -> DomainRow | None:
    row = conn.execute("SELECT * FROM domains WHERE domain = ?", (domain,)).fetchone()
    return _domain(row) if row else None


def insert_domain(conn: sqlite3.Connection, domain: str, service_domain: str | None) -> DomainRow:
    LocalChanges.note(conn)
    row_id = new_id()
    now = time.time()
    conn.execute(
        "INSERT INTO domains (id, domain, service_domain, created_at) VALUES (?, ?, ?, ?)",
        (row_id, domain, service_domain, now),
    )
    return DomainRow(row_id, domain, service_domain, now)


def delete_domain(conn: sqlite3.Connection, domain: str) -> None:
    LocalChanges.note(conn)
    conn.execute("DELETE FROM domains WHERE domain = ?", (domain,))


def list_accounts(conn: sqlite3.Connection, *, include_deleted: bool = False) -> list[AccountRow]:
    where = "" if include_deleted else "WHERE deleted_at IS NULL"
    return [
        _account(r)
        for r in conn.execute(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts {where} ORDER BY domain, username")
    ]


def find_account(conn: sqlite3.Connection, host: str, username: str) -> AccountRow | None:
    """The account (removed ones too) holding `username` on URL host `host`."""
    row = conn.execute(
        f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE host = ? AND username = ?", (host, username)
    ).fetchone()
    return _account(row) if row else None


def get_account_by_id(conn: sqlite3.Connection, account_id: int) -> AccountRow:
    row = conn.execute(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE id = ?", (account_id,)).fetchone()
    return _account(row)


def find_account_by_handle(conn: sqlite3.Connection, username: str, domain: str) -> AccountRow | None:
    row = conn.execute(
        f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE username = ? AND domain = ? AND deleted_at IS NULL",
        (username, domain),
    ).fetchone()
    return _account(row) if row else None


def count_live_accounts(conn: sqlite3.Connection, domain: str) -> int:
    return conn.execute(
        "SELECT count(*) FROM accounts WHERE domain = ? AND deleted_at IS NULL", (domain,)
    ).fetchone()[0]


def insert_account(
    conn: sqlite3.Connection,
    *,
    username: str,
    domain: str,
    host: str,
    password_hash: str,
    is_admin: bool,
    private_key_pem: str,
    public_key_pem: str,
) -> int:
    LocalChanges.note(conn)
    row_id = new_id()
    now = time.time()
    conn.execute(
        "INSERT INTO accounts (id, username, domain, host, password_hash, is_admin, "
        "private_key_pem, public_key_pem, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (row_id, username, domain, host, password_hash, int(is_admin), private_key_pem, public_key_pem, now, now),
    )
    return row_id


def set_password_hash(conn: sqlite3.Connection, account_id: int, password_hash: str) -> None:
    LocalChanges.note(conn)
    conn.execute(
        "UPDATE accounts SET password_hash = ?, updated_at = ? WHERE id = ?",
        (password_hash, time.time(), account_id),
    )


def update_profile(conn: sqlite3.Connection, account_id: int, changes: dict[str, object]) -> None:
    """Set profile columns (display_name, summary, fields, also_known_as, locked, moved_to, ...)."""
    allowed = {"display_name", "summary", "fields", "also_known_as", "locked", "discoverable", "moved_to", "avatar_url", "header_url"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"not profile columns: {sorted(unknown)}")
    LocalChanges.note(conn)
    values = {k: json.dumps(v) if k in ("fields", "also_known_as") else v for k, v in changes.items()}
    assignments = ", ".join(f"{name} = ?" for name in values)
    conn.execute(
        f"UPDATE accounts SET {assignments}, updated_at = ? WHERE id = ?", (*values.values(), time.time(), account_id)
    )


def get_password_hash(conn: sqlite3.Connection, account_id: int) -> str:
    return conn.execute("SELECT password_hash FROM accounts WHERE id = ?", (account_id,)).fetchone()[0]


def mark_account_deleted(conn: sqlite3.Connection, account_id: int) -> None:
    LocalChanges.note(conn)
    now = time.time()
    # The password is cleared so the login dies with the account; the key stays.
    conn.execute(
        "UPDATE accounts SET deleted_at = ?, updated_at = ?, password_hash = '' WHERE id = ?",
        (now, now, account_id),
    )


def account_private_key_pem(conn: sqlite3.Connection, account_id: int) -> str:
    return conn.execute("SELECT private_key_pem FROM accounts WHERE id = ?", (account_id,)).fetchone()[0]


def list_instance_actors(conn: sqlite3.Connection) -> dict[str, str]:
    """host -> public key PEM of every instance actor."""
    return {r["host"]: r["public_key_pem"] for r in conn.execute("SELECT host, public_key_pem FROM instance_actors")}


def insert_instance_actor(conn: sqlite3.Connection, host: str, private_key_pem: str, public_key_pem: str) -> None:
    LocalChanges.note(conn)
    conn.execute(
        "INSERT OR IGNORE INTO instance_actors (host, private_key_pem, public_key_pem, created_at) "
        "VALUES (?, ?, ?, ?)",
        (host, private_key_pem, public_key_pem, time.time()),
    )


def instance_actor_private_key_pem(conn: sqlite3.Connection, host: str) -> str | None:
    row = conn.execute("SELECT private_key_pem FROM instance_actors WHERE host = ?", (host,)).fetchone()
    return row[0] if row else None
