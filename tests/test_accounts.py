"""Local accounts: handle rules, keys, passwords, and removal."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from microfedi.accounts import (
    MAX_USERNAME,
    add_user,
    get_user,
    list_users,
    normalize_username,
    parse_handle,
    remove_user,
    set_password,
    verify_login,
)
from microfedi.domains import add_domain
from microfedi.errors import ActionError
from microfedi.store import directory as q
from microfedi.store.database import Database


@pytest.fixture
async def two_domains(db: Database) -> Database:
    await add_domain(db, "alice.test")
    await add_domain(db, "carol.test", "fedi.test")
    return db


@pytest.mark.parametrize(
    "raw", ["alice@alice.test", "Alice@Alice.Test", "@alice@alice.test", "acct:alice@alice.test", " alice@alice.test "]
)
def test_parse_handle(raw: str) -> None:
    assert parse_handle(raw) == ("alice", "alice.test")


@pytest.mark.parametrize("raw", ["alice", "alice@", "@alice.test", "alice@http://alice.test", "al ice@alice.test"])
def test_parse_handle_refuses(raw: str) -> None:
    with pytest.raises(ActionError):
        parse_handle(raw)


@pytest.mark.parametrize("name", ["a", "alice_b", "a.b", "a-b", "_x_", "x" * MAX_USERNAME])
def test_usernames_accepted(name: str) -> None:
    assert normalize_username(name.upper()) == name


@pytest.mark.parametrize("name", ["", ".a", "a.", "a-", "-a", "a b", "añ", "a/b", "x" * (MAX_USERNAME + 1)])
def test_usernames_refused(name: str) -> None:
    with pytest.raises(ActionError, match="not a valid username"):
        normalize_username(name)


async def test_add_user_makes_a_login_and_an_rsa_2048_actor_key(two_domains: Database) -> None:
    db = two_domains
    account, password = await add_user(db, "Carol@carol.test", None, admin=True)

    assert (account.username, account.domain, account.host, account.is_admin) == ("carol", "carol.test", "fedi.test", True)
    assert len(password) >= 12
    assert await verify_login(db, "carol@carol.test", password) == account
    assert await verify_login(db, "carol@carol.test", password[:-1]) is None

    public_key = serialization.load_pem_public_key(account.public_key_pem.encode())
    assert isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size == 2048
    private_pem = await db.read(q.account_private_key_pem, account.id)
    private_key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    assert isinstance(private_key, rsa.RSAPrivateKey)
    signature = private_key.sign(b"probe", padding.PKCS1v15(), hashes.SHA256())
    public_key.verify(signature, b"probe", padding.PKCS1v15(), hashes.SHA256())  # raises if the pair mismatches


async def test_every_user_gets_its_own_key(two_domains: Database) -> None:
    alice, _ = await add_user(two_domains, "alice@alice.test", "a long password")
    carol, _ = await add_user(two_domains, "carol@carol.test", "a long password")
    assert alice.public_key_pem != carol.public_key_pem


async def test_short_passwords_are_refused(two_domains: Database) -> None:
    with pytest.raises(ActionError, match="too short"):
        await add_user(two_domains, "alice@alice.test", "short")
    assert await list_users(two_domains) == []


async def test_unknown_users_and_domains_are_404s(two_domains: Database) -> None:
    with pytest.raises(ActionError, match="no user nobody@alice.test") as unknown_user:
        await get_user(two_domains, "nobody@alice.test")
    with pytest.raises(ActionError, match="domains here: alice.test, carol.test") as unknown_domain:
        await get_user(two_domains, "nobody@nope.test")
    assert unknown_user.value.status == unknown_domain.value.status == 404


async def test_removed_user_keeps_its_row_and_key_but_not_its_login(two_domains: Database) -> None:
    db = two_domains
    account, password = await add_user(db, "alice@alice.test", None)
    await set_password(db, "alice@alice.test", "another long one")

    removed = await remove_user(db, "@alice@alice.test")

    assert removed.id == account.id
    assert await verify_login(db, "alice@alice.test", "another long one") is None
    assert await list_users(db) == []
    kept = await db.read(q.find_account, "alice.test", "alice")
    assert kept is not None and kept.deleted_at is not None
    assert kept.public_key_pem == account.public_key_pem
    assert await db.read(q.get_password_hash, account.id) == ""
    with pytest.raises(ActionError, match="no user alice@alice.test"):
        await set_password(db, "alice@alice.test", None)


async def test_list_users_by_domain(two_domains: Database) -> None:
    await add_user(two_domains, "alice@alice.test", "a long password")
    await add_user(two_domains, "carol@carol.test", "a long password")
    assert [a.handle for a in await list_users(two_domains)] == ["alice@alice.test", "carol@carol.test"]
    assert [a.handle for a in await list_users(two_domains, "Carol.Test")] == ["carol@carol.test"]
