"""Local accounts: the handle rules, and adding, listing and removing users."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable

from microfedi import passwords
from microfedi.domains import describe_domains, normalize_domain
from microfedi.errors import ActionError
from microfedi.federation.keys import generate_key_pair
from microfedi.store import directory as q
from microfedi.store.database import Database
from microfedi.store.directory import AccountRow

# Mastodon's rule: letters, digits and underscores, with dots and hyphens inside.
_USERNAME = re.compile(r"^[a-z0-9_]+([a-z0-9_.-]+[a-z0-9_]+)?$")
MAX_USERNAME = 30


def parse_handle(raw: str) -> tuple[str, str]:
    """Split `user@domain` (an `@` in front is fine) into a checked (username, domain)."""
    text = raw.strip().removeprefix("acct:").lstrip("@")
    username, sep, domain = text.partition("@")
    if not sep or not username or not domain:
        raise ActionError(f"{raw!r} is not a handle; write it as USER@DOMAIN, such as alice@alice.example")
    return normalize_username(username), normalize_domain(domain)


def normalize_username(raw: str) -> str:
    name = raw.strip().lower()
    if len(name) > MAX_USERNAME or not _USERNAME.match(name):
        raise ActionError(
            f"{raw!r} is not a valid username: use up to {MAX_USERNAME} letters, digits and "
            "underscores (dots and hyphens only between them)"
        )
    return name


def _insert_account(
    conn: sqlite3.Connection,
    username: str,
    domain: str,
    password_hash: str,
    is_admin: bool,
    key_pair: tuple[str, str],
) -> AccountRow:
    domain_row = q.get_domain(conn, domain)
    if domain_row is None:
        raise ActionError(f"no domain {domain}; {describe_domains(conn)}", status=404)
    host = domain_row.url_host
    taken = q.find_account(conn, host, username)
    if taken is not None:
        if taken.deleted_at:
            raise ActionError(
                f"{username} was used by the removed account {taken.handle}; other servers "
                f"remember it, so the name is not reused on {host}"
            )
        if taken.domain == domain:
            raise ActionError(f"{taken.handle} exists already")
        raise ActionError(
            f"{username} is taken on {host} by {taken.handle}, whose actor URLs also live on "
            f"{host}: a username must be unique per URL host; pick another name"
        )
    private_pem, public_pem = key_pair
    account_id = q.insert_account(
        conn,
        username=username,
        domain=domain,
        host=host,
        password_hash=password_hash,
        is_admin=is_admin,
        private_key_pem=private_pem,
        public_key_pem=public_pem,
    )
    created = q.find_account(conn, host, username)
    assert created is not None and created.id == account_id
    return created


async def add_user(db: Database, handle: str, password: str | None, *, admin: bool = False) -> tuple[AccountRow, str]:
    """Create a login and its actor (fresh RSA-2048 key).

    Without a password one is generated. Returns the account and the password.
    """
    username, domain = parse_handle(handle)
    if password is None:
        password = passwords.generate_password()
    check_password_rules(password)
    # Key generation and hashing are slow; do them before taking the writer.
    key_pair = generate_key_pair()
    password_hash = passwords.hash_password(password)
    account = await db.write(_insert_account, username, domain, password_hash, admin, key_pair)
    return account, password


def check_password_rules(password: str) -> None:
    if len(password) < passwords.MIN_LENGTH:
        raise ActionError(f"the password is too short: use at least {passwords.MIN_LENGTH} characters")


def _live_account(conn: sqlite3.Connection, username: str, domain: str) -> AccountRow:
    account = q.find_account_by_handle(conn, username, domain)
    if account is None:
        if q.get_domain(conn, domain) is None:
            raise ActionError(f"no domain {domain}; {describe_domains(conn)}", status=404)
        raise ActionError(f"no user {username}@{domain} (see: microfedi user list)", status=404)
    return account


async def get_user(db: Database, handle: str) -> AccountRow:
    username, domain = parse_handle(handle)
    return await db.read(_live_account, username, domain)


async def list_users(db: Database, domain: str | None = None) -> list[AccountRow]:
    accounts = await db.read(q.list_accounts)
    if domain:
        wanted = normalize_domain(domain)
        accounts = [a for a in accounts if a.domain == wanted]
    return accounts


async def set_password(db: Database, handle: str, password: str | None) -> str:
    """Set (or, given None, generate) a user's password. Returns the password."""
    account = await get_user(db, handle)
    if password is None:
        password = passwords.generate_password()
    check_password_rules(password)
    await db.write(q.set_password_hash, account.id, passwords.hash_password(password))
    return password


async def verify_login(db: Database, handle: str, password: str) -> AccountRow | None:
    """The account if `password` is right for `handle`, else None."""
    try:
        account = await get_user(db, handle)
    except ActionError:
        return None
    stored = await db.read(q.get_password_hash, account.id)
    return account if passwords.check_password(password, stored) else None


async def remove_user(
    db: Database, handle: str, *, also: Callable[[sqlite3.Connection, AccountRow], None] | None = None
) -> AccountRow:
    """Remove a login and its actor. The row and key stay, to sign the actor's Delete.

    `also(conn, account)` runs in the same transaction (to queue that Delete).
    """
    username, domain = parse_handle(handle)

    def remove(conn: sqlite3.Connection) -> AccountRow:
        account = _live_account(conn, username, domain)
        q.mark_account_deleted(conn, account.id)
        if also is not None:
            also(conn, account)
        return account

    return await db.write(remove)
