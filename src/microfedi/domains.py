"""Domains: name rules, the Host → domain directory, and adding/removing domains.

A domain row has a handle domain (`alice.example`) and an optional service
domain (`fedi.example`) whose host serves its ActivityPub URLs. The directory is
an in-memory snapshot of domains, accounts and instance actors that every
request consults; it is reloaded when the database says it changed, so domains
and users added by the CLI (another process) take effect without a restart.
"""

from __future__ import annotations

import ipaddress
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from microfedi.errors import ActionError
from microfedi.federation.keys import generate_key_pair
from microfedi.store import directory as q
from microfedi.store.database import Database
from microfedi.store.directory import AccountRow, DomainRow

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def normalize_domain(raw: str, *, what: str = "domain") -> str:
    """Lower-case, IDNA-encode and validate a domain name, or raise ActionError."""
    name = raw.strip().lower().rstrip(".")
    if not name:
        raise ActionError(f"the {what} is empty; give a name such as alice.example")
    if ":" in name or "/" in name:
        raise ActionError(
            f"{raw!r} is not a bare {what}: give the name only, without scheme, port or path "
            "(the public port is the public_port setting)"
        )
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        raise ActionError(f"{raw!r} is an IP address; fediverse handles need a domain name")
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise ActionError(f"{raw!r} is not a valid {what} name") from None
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ActionError(
            f"{raw!r} is not a valid {what} name: use letters, digits, hyphens and dots, "
            "such as alice.example"
        )
    if labels[-1].isdigit():
        raise ActionError(f"{raw!r} is not a valid {what} name: the last label cannot be a number")
    return name


def host_of(header: str) -> str:
    """The lower-cased host of a Host header, without port or trailing dot."""
    host = header.strip().lower()
    if host.startswith("["):  # IPv6 literal
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0].rstrip(".") if ":" in host else host.rstrip(".")


@dataclass
class HostView:
    """What one URL host serves: its own handle domain and/or others' ActivityPub URLs."""

    host: str
    handle_domain: DomainRow | None = None
    served_domains: list[DomainRow] = field(default_factory=list)

    @property
    def serves_actors(self) -> bool:
        """True when actor and object URLs live on this host."""
        return bool(self.served_domains)


@dataclass
class Directory:
    """A consistent snapshot of domains, accounts and instance actors."""

    generation: int
    domains: dict[str, DomainRow]
    hosts: dict[str, HostView]
    accounts_by_url: dict[tuple[str, str], AccountRow]
    accounts_by_handle: dict[tuple[str, str], AccountRow]
    removed_by_url: dict[tuple[str, str], AccountRow]
    instance_keys: dict[str, str]

    @classmethod
    def load(cls, conn: sqlite3.Connection) -> Directory:
        generation = q.directory_generation(conn)
        domains = {d.domain: d for d in q.list_domains(conn)}
        hosts: dict[str, HostView] = {}
        for d in domains.values():
            hosts.setdefault(d.domain, HostView(d.domain)).handle_domain = d
            hosts.setdefault(d.url_host, HostView(d.url_host)).served_domains.append(d)
        live, removed = {}, {}
        for account in q.list_accounts(conn, include_deleted=True):
            (removed if account.deleted_at else live)[(account.host, account.username)] = account
        by_handle = {(a.username, a.domain): a for a in live.values()}
        return cls(generation, domains, hosts, live, by_handle, removed, q.list_instance_actors(conn))

    def actor_host(self, host: str) -> str:
        """The host whose instance actor speaks for `host` (its service domain on a split domain)."""
        view = self.hosts.get(host)
        if view is None or view.serves_actors or view.handle_domain is None:
            return host
        return view.handle_domain.url_host

    def accounts_on_host(self, host: str) -> list[AccountRow]:
        """Live accounts whose handle domain or URL host is `host`."""
        return [a for a in self.accounts_by_url.values() if a.host == host or a.domain == host]


class DirectoryCache:
    """Keeps the current Directory, reloading only when the database changed.

    Changes committed by this process are noticed on the next request (a
    counter bumped after commit). Changes by other processes (the CLI) are
    noticed within `recheck_seconds`: `PRAGMA data_version` says whether anyone
    committed, and only then is the generation counter (bumped by triggers on
    the directory tables) read, and only when that moved is the snapshot
    rebuilt. Callers may cache anything derived from the snapshot in
    `derived`, which is emptied on every reload.
    """

    def __init__(self, db: Database, recheck_seconds: float = 0.1) -> None:
        from microfedi.store.database import connect

        self._conn = connect(db.path, readonly=True)
        self._recheck = recheck_seconds
        self._next_check = 0.0
        self._local_changes = q.LocalChanges.count
        self._data_version = -1
        self._directory = Directory.load(self._conn)
        self.derived: dict[object, object] = {}

    def current(self) -> Directory:
        now = time.monotonic()
        if q.LocalChanges.count == self._local_changes and now < self._next_check:
            return self._directory
        self._next_check = now + self._recheck
        self._local_changes = q.LocalChanges.count
        data_version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if data_version != self._data_version:
            self._data_version = data_version
            if q.directory_generation(self._conn) != self._directory.generation:
                self._directory = Directory.load(self._conn)
                self.derived = {}
        return self._directory

    def close(self) -> None:
        self._conn.close()


def _check_new_domain(conn: sqlite3.Connection, domain: str, service_domain: str | None) -> None:
    existing = {d.domain: d for d in q.list_domains(conn)}
    if domain in existing:
        raise ActionError(f"domain {domain} exists already (see: microfedi domain list)")
    for other in existing.values():
        if other.service_domain == domain and service_domain:
            raise ActionError(
                f"{domain} is the service domain of {other.domain}, so it must serve its own "
                "URLs: add it without --service-domain"
            )
    if service_domain:
        served_by = existing.get(service_domain)
        if served_by and served_by.service_domain:
            raise ActionError(
                f"{service_domain} is itself served by {served_by.service_domain}; "
                f"use --service-domain {served_by.service_domain}"
            )


def _add_domain(conn: sqlite3.Connection, domain: str, service_domain: str | None) -> DomainRow:
    _check_new_domain(conn, domain, service_domain)
    row = q.insert_domain(conn, domain, service_domain)
    return row


async def add_domain(db: Database, raw_domain: str, raw_service_domain: str | None = None) -> DomainRow:
    """Add a local domain, and an instance actor for its URL host if there is none."""
    domain = normalize_domain(raw_domain)
    service_domain = normalize_domain(raw_service_domain, what="service domain") if raw_service_domain else None
    if service_domain == domain:
        service_domain = None
    row = await db.write(_add_domain, domain, service_domain)
    await ensure_instance_actor(db, row.url_host)
    return row


async def ensure_instance_actor(db: Database, host: str) -> None:
    """Give `host` its Application actor (and key) unless it has one."""
    known = await db.read(q.list_instance_actors)
    if host not in known:
        private_pem, public_pem = generate_key_pair()
        await db.write(q.insert_instance_actor, host, private_pem, public_pem)


async def ensure_all_instance_actors(db: Database) -> None:
    for d in await db.read(q.list_domains):
        await ensure_instance_actor(db, d.url_host)


def _remove_domain(
    conn: sqlite3.Connection, domain: str, force: bool, also: Callable[[sqlite3.Connection, AccountRow], None] | None
) -> int:
    if q.get_domain(conn, domain) is None:
        raise ActionError(f"no domain {domain}; {describe_domains(conn)}", status=404)
    for other in q.list_domains(conn):
        if other.service_domain == domain:
            raise ActionError(
                f"{domain} is the service domain of {other.domain}; remove {other.domain} first"
            )
    users = [a for a in q.list_accounts(conn) if a.domain == domain]
    if users and not force:
        raise ActionError(
            f"{domain} still has {len(users)} user(s) ({', '.join(a.handle for a in users[:5])}); "
            "remove them first or pass --force"
        )
    for account in users:
        q.mark_account_deleted(conn, account.id)
        if also is not None:
            also(conn, account)
    q.delete_domain(conn, domain)
    return len(users)


async def remove_domain(
    db: Database, raw_domain: str, *, force: bool = False,
    also: Callable[[sqlite3.Connection, AccountRow], None] | None = None,
) -> int:  # fmt: skip
    """Remove a domain; with force, its users too. Returns how many users were removed.

    `also(conn, account)` runs for each removed user in the same transaction
    (to queue the Delete of its actor).
    """
    return await db.write(_remove_domain, normalize_domain(raw_domain), force, also)


async def list_domains(db: Database) -> list[tuple[DomainRow, int]]:
    """Every domain with its number of users."""

    def read(conn: sqlite3.Connection) -> list[tuple[DomainRow, int]]:
        return [(d, q.count_live_accounts(conn, d.domain)) for d in q.list_domains(conn)]

    return await db.read(read)


def describe_domains(conn: sqlite3.Connection) -> str:
    """'domains here: a, b' or how to add one — for error messages."""
    names = [d.domain for d in q.list_domains(conn)]
    if not names:
        return "there are no domains yet; add one with: microfedi domain add DOMAIN"
    return "domains here: " + ", ".join(names) + " (add one with: microfedi domain add DOMAIN)"
