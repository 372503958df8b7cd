"""Domain names, Host headers, adding and removing domains, and the routing directory."""

from __future__ import annotations

import pytest

from microfedi.accounts import add_user, remove_user
from microfedi.domains import (
    Directory,
    DirectoryCache,
    add_domain,
    host_of,
    list_domains,
    normalize_domain,
    remove_domain,
)
from microfedi.errors import ActionError
from microfedi.store import directory as q
from microfedi.store.database import Database


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("alice.example", "alice.example"),
        ("Alice.Example", "alice.example"),
        ("  alice.example.  ", "alice.example"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("a-b.c-d.example", "a-b.c-d.example"),
        ("localhost", "localhost"),
    ],
)
def test_normalize_domain_accepts(raw: str, expected: str) -> None:
    assert normalize_domain(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("http://alice.example", "without scheme, port or path"),
        ("alice.example:443", "without scheme, port or path"),
        ("alice.example/blog", "without scheme, port or path"),
        ("1.2.3.4", "IP address"),
        ("a..b", "not a valid domain name"),
        ("-alice.example", "not a valid domain name"),
        ("alice-.example", "not a valid domain name"),
        ("alice_b.example", "not a valid domain name"),
        ("x" * 64 + ".example", "not a valid domain name"),
        (("a" * 60 + ".") * 5 + "example", "not a valid domain name"),
        ("alice.123", "last label cannot be a number"),
    ],
)
def test_normalize_domain_refuses(raw: str, reason: str) -> None:
    with pytest.raises(ActionError, match=reason) as refused:
        normalize_domain(raw)
    assert refused.value.status == 400


def test_refusals_name_what_was_refused() -> None:
    with pytest.raises(ActionError, match="service domain"):
        normalize_domain("", what="service domain")


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("alice.test", "alice.test"),
        ("ALICE.Test:8443", "alice.test"),
        ("alice.test.", "alice.test"),
        ("alice.test.:80", "alice.test"),
        ("[::1]:8000", "[::1]"),
        ("", ""),
    ],
)
def test_host_of_header(header: str, host: str) -> None:
    assert host_of(header) == host


async def test_add_domain_gives_the_url_host_an_instance_actor(db: Database) -> None:
    carol = await add_domain(db, "carol.test", "Fedi.Test")
    assert (carol.domain, carol.service_domain, carol.url_host) == ("carol.test", "fedi.test", "fedi.test")
    keys = await db.read(q.list_instance_actors)
    assert set(keys) == {"fedi.test"}

    await add_domain(db, "fedi.test")
    assert await db.read(q.list_instance_actors) == keys, "the existing instance key must be kept"


async def test_a_service_domain_equal_to_the_domain_means_none(db: Database) -> None:
    row = await add_domain(db, "alice.test", "ALICE.test")
    assert row.service_domain is None and row.url_host == "alice.test"


async def test_service_domains_do_not_chain(db: Database) -> None:
    await add_domain(db, "carol.test", "fedi.test")
    with pytest.raises(ActionError, match="use --service-domain fedi.test"):
        await add_domain(db, "erin.test", "carol.test")
    with pytest.raises(ActionError, match="fedi.test is the service domain of carol.test"):
        await add_domain(db, "fedi.test", "other.test")
    assert [d.domain for d, _ in await list_domains(db)] == ["carol.test"]


async def test_removing_an_unknown_domain_is_a_404(db: Database) -> None:
    with pytest.raises(ActionError) as refused:
        await remove_domain(db, "nope.test")
    assert refused.value.status == 404
    assert "no domains yet" in str(refused.value)


async def test_directory_maps_hosts_to_what_they_serve(db: Database) -> None:
    await add_domain(db, "alice.test")
    await add_domain(db, "carol.test", "fedi.test")
    await add_user(db, "alice@alice.test", None)
    await add_user(db, "carol@carol.test", None)

    directory = await db.read(Directory.load)

    assert set(directory.hosts) == {"alice.test", "carol.test", "fedi.test"}
    alice_host, carol_host, fedi_host = (directory.hosts[h] for h in ("alice.test", "carol.test", "fedi.test"))
    assert alice_host.handle_domain is not None and alice_host.serves_actors
    assert carol_host.handle_domain is not None and not carol_host.serves_actors
    # fedi.test is not a domain of its own here: it only serves carol.test's URLs.
    assert fedi_host.handle_domain is None and [d.domain for d in fedi_host.served_domains] == ["carol.test"]

    assert set(directory.accounts_by_url) == {("alice.test", "alice"), ("fedi.test", "carol")}
    assert set(directory.accounts_by_handle) == {("alice", "alice.test"), ("carol", "carol.test")}
    assert [a.handle for a in directory.accounts_on_host("fedi.test")] == ["carol@carol.test"]
    assert [a.handle for a in directory.accounts_on_host("carol.test")] == ["carol@carol.test"]
    assert set(directory.instance_keys) == {"alice.test", "fedi.test"}

    await remove_user(db, "alice@alice.test")
    directory = await db.read(Directory.load)
    assert set(directory.removed_by_url) == {("alice.test", "alice")}
    assert directory.accounts_on_host("alice.test") == []


async def test_directory_cache_reloads_only_when_the_directory_changed(db: Database) -> None:
    cache = DirectoryCache(db)
    try:
        first = cache.current()
        cache.derived["rendered"] = b"cached"
        assert cache.current() is first

        # A commit that touches no directory table keeps the snapshot and what was derived from it.
        await db.write(lambda conn: conn.execute("INSERT INTO meta (key, value) VALUES ('unrelated', 'x')"))
        assert cache.current() is first and cache.derived == {"rendered": b"cached"}

        # A domain added through another Database on the same file (as the CLI does) shows at once.
        with Database(db.path) as other_process:
            await add_domain(other_process, "alice.test")
        second = cache.current()
        assert second is not first and "alice.test" in second.domains
        assert cache.derived == {}
    finally:
        cache.close()
