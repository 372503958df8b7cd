"""Discovery over the ASGI app: WebFinger, host-meta, NodeInfo, actors, routing by Host.

The install has four domains, set up with the CLI once per module:

- alice.test serves itself (alice; olivia, who was removed);
- fedi.test serves itself (frank) and the ActivityPub URLs of
- carol.test, a split domain (carol, whose actor is https://fedi.test/@carol);
- dave.test serves itself (dave).

Every test serves its own copy of that data dir, so tests may change it.
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from microfedi.accounts import add_user, remove_user
from microfedi.config import Settings, load_settings
from microfedi.domains import add_domain, remove_domain
from microfedi.store.database import Database

AS_ACCEPT = "application/activity+json"
LD_ACCEPT = 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"'
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
NODEINFO_SCHEMA = "http://nodeinfo.diaspora.software/ns/schema/{}"
APPLICATION_REL = "https://www.w3.org/ns/activitystreams#Application"

ALICE = "https://alice.test/@alice"
CAROL = "https://fedi.test/@carol"
URL_HOSTS = ("alice.test", "fedi.test", "dave.test")
USERS_PER_HOST = {"alice.test": 1, "fedi.test": 2, "carol.test": 1, "dave.test": 1}


@pytest.fixture(scope="module")
def seeded_data_dir(tmp_path_factory: pytest.TempPathFactory, cli_in: Callable[..., Result]) -> Path:
    data_dir = tmp_path_factory.mktemp("discovery") / "data"
    commands = [
        ["init"],
        ["domain", "add", "alice.test"],
        ["domain", "add", "fedi.test"],
        ["domain", "add", "carol.test", "--service-domain", "fedi.test"],
        ["domain", "add", "dave.test"],
        *(["user", "add", handle] for handle in ("alice@alice.test", "olivia@alice.test", "frank@fedi.test")),
        ["user", "add", "carol@carol.test"],
        ["user", "add", "dave@dave.test"],
        ["user", "remove", "olivia@alice.test", "--yes"],
    ]
    for args in commands:
        result = cli_in(data_dir, *args)
        assert result.exit_code == 0, f"{args}: {result.output}"
    return data_dir


@pytest.fixture
def settings(seeded_data_dir: Path, tmp_path: Path) -> Settings:
    copy = tmp_path / "data"
    shutil.copytree(seeded_data_dir, copy)
    return load_settings(copy, environ={})


@pytest.fixture
async def served(serve: Callable[[Settings], Awaitable[Any]], settings: Settings) -> Any:
    return await serve(settings)


@pytest.fixture
def client(served: Any) -> httpx.AsyncClient:
    return served.client


async def webfinger(client: httpx.AsyncClient, host: str, resource: str | None, **params: str) -> httpx.Response:
    query = dict(params) if resource is None else {"resource": resource, **params}
    return await client.get(f"https://{host}/.well-known/webfinger", params=query)


async def get_as(client: httpx.AsyncClient, url: str, accept: str = AS_ACCEPT) -> httpx.Response:
    return await client.get(url, headers={"Accept": accept})


def self_link(jrd: dict[str, Any]) -> str:
    links = [link for link in jrd["links"] if link["rel"] == "self"]
    assert len(links) == 1 and links[0]["type"] == "application/activity+json", jrd
    return links[0]["href"]


def rsa_key_size(pem: str) -> int:
    key = serialization.load_pem_public_key(pem.encode())
    assert isinstance(key, rsa.RSAPublicKey)
    return key.key_size


# ---------------------------------------------------------------- WebFinger


@pytest.mark.parametrize(
    "resource",
    ["acct:alice@alice.test", "alice@alice.test", "@alice@alice.test", "acct:ALICE@Alice.Test", ALICE],
)
async def test_webfinger_answers_every_form_of_the_resource(client: httpx.AsyncClient, resource: str) -> None:
    response = await webfinger(client, "alice.test", resource)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/jrd+json")
    assert response.headers["access-control-allow-origin"] == "*"
    jrd = response.json()
    assert jrd["subject"] == "acct:alice@alice.test"
    assert self_link(jrd) == ALICE
    assert ALICE in jrd["aliases"]


async def test_webfinger_split_domain_round_trip(client: httpx.AsyncClient) -> None:
    # Mastodon first asks the actor's host for preferredUsername@host ...
    at_service = await webfinger(client, "fedi.test", "acct:carol@fedi.test")
    assert at_service.status_code == 200, at_service.text
    assert at_service.json()["subject"] == "acct:carol@carol.test"
    # ... then the handle domain for the subject it was given; the self links must agree.
    at_handle = await webfinger(client, "carol.test", "acct:carol@carol.test")
    assert at_handle.status_code == 200, at_handle.text
    assert at_handle.json()["subject"] == "acct:carol@carol.test"
    assert self_link(at_service.json()) == self_link(at_handle.json()) == CAROL
    # carol.test redirects its WebFinger to fedi.test, which must answer the handle too.
    redirected = await webfinger(client, "fedi.test", "acct:carol@carol.test")
    assert self_link(redirected.json()) == CAROL


async def test_webfinger_on_the_service_host_also_answers_its_own_users(client: httpx.AsyncClient) -> None:
    response = await webfinger(client, "fedi.test", "acct:frank@fedi.test")
    assert response.json()["subject"] == "acct:frank@fedi.test"
    assert self_link(response.json()) == "https://fedi.test/@frank"


@pytest.mark.parametrize(
    ("host", "resource"),
    [
        ("alice.test", "acct:carol@carol.test"),
        ("alice.test", "acct:carol@fedi.test"),
        ("alice.test", CAROL),
        ("alice.test", "acct:frank@fedi.test"),
        ("dave.test", "acct:alice@alice.test"),
        ("dave.test", ALICE),
        ("carol.test", "acct:frank@fedi.test"),
        ("fedi.test", "acct:alice@alice.test"),
        ("alice.test", "acct:fedi.test@fedi.test"),
        ("alice.test", "https://fedi.test/actor"),
    ],
)
async def test_a_host_never_answers_for_another_domains_account(
    client: httpx.AsyncClient, host: str, resource: str
) -> None:
    response = await webfinger(client, host, resource)
    assert response.status_code == 404
    assert "links" not in response.text


@pytest.mark.parametrize("resource", ["acct:nobody@alice.test", "https://alice.test/@nobody", "acct:alice@nope.test"])
async def test_webfinger_for_unknown_accounts_is_404(client: httpx.AsyncClient, resource: str) -> None:
    assert (await webfinger(client, "alice.test", resource)).status_code == 404


async def test_webfinger_for_a_removed_account_is_not_found(client: httpx.AsyncClient) -> None:
    assert (await webfinger(client, "alice.test", "acct:olivia@alice.test")).status_code in (404, 410)


@pytest.mark.parametrize(
    "resource",
    [None, "", "   ", "acct:alice", "acct:@alice.test", "acct:alice@", "alice", "acct:a@b@alice.test", "https://"],
)
async def test_webfinger_with_a_missing_or_malformed_resource_is_400(
    client: httpx.AsyncClient, resource: str | None
) -> None:
    response = await webfinger(client, "alice.test", resource)
    assert response.status_code == 400
    assert "resource" in response.text and len(response.text.strip().splitlines()) == 1


async def test_webfinger_rel_filter(client: httpx.AsyncClient) -> None:
    response = await webfinger(client, "alice.test", "acct:alice@alice.test", rel="self")
    assert [link["rel"] for link in response.json()["links"]] == ["self"]


# ---------------------------------------------------------------- routing by Host


@pytest.mark.parametrize("path", ["/", "/@alice", "/.well-known/webfinger?resource=acct:alice@alice.test", "/actor"])
async def test_an_unknown_host_gets_a_404_with_a_reason(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(f"https://nope.test{path}", headers={"Accept": AS_ACCEPT})
    assert response.status_code == 404
    assert "unknown host nope.test" in response.text
    assert "alice" not in response.text.replace(path, "")


async def test_host_with_port_and_upper_case_is_routed(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "https://unused.invalid/@Alice", headers={"Host": "ALICE.Test:8443", "Accept": AS_ACCEPT}
    )
    assert response.status_code == 200
    assert response.json()["id"] == ALICE


async def test_actor_urls_live_only_on_their_url_host(client: httpx.AsyncClient) -> None:
    assert (await get_as(client, "https://carol.test/@carol")).status_code == 404
    assert (await get_as(client, "https://alice.test/@carol")).status_code == 404
    assert (await get_as(client, "https://dave.test/@alice")).status_code == 404


@pytest.mark.parametrize("host", ["alice.test", "nope.test", "127.0.0.1:8000"])
async def test_health_answers_on_any_host(client: httpx.AsyncClient, host: str) -> None:
    response = await client.get("https://x.invalid/health", headers={"Host": host})
    assert (response.status_code, response.text) == (200, "OK")


# ---------------------------------------------------------------- host-meta and NodeInfo


@pytest.mark.parametrize("host", ["alice.test", "fedi.test", "carol.test"])
async def test_host_meta_points_to_webfinger_on_the_same_host(client: httpx.AsyncClient, host: str) -> None:
    template = f"https://{host}/.well-known/webfinger?resource={{uri}}"
    response = await client.get(f"https://{host}/.well-known/host-meta")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xrd+xml")
    links = ET.fromstring(response.text).findall("{http://docs.oasis-open.org/ns/xri/xrd-1.0}Link")
    assert [(link.get("rel"), link.get("template")) for link in links] == [("lrdd", template)]

    as_json = await client.get(f"https://{host}/.well-known/host-meta.json")
    assert as_json.json() == {"links": [{"rel": "lrdd", "template": template}]}


@pytest.mark.parametrize(
    "host",
    [
        "alice.test",
        "fedi.test",
        "dave.test",
        "carol.test",
    ],
)
async def test_nodeinfo_index_links_resolve(client: httpx.AsyncClient, host: str) -> None:
    response = await client.get(f"https://{host}/.well-known/nodeinfo")
    assert response.status_code == 200
    links = {link["rel"]: link["href"] for link in response.json()["links"]}
    assert links[NODEINFO_SCHEMA.format("2.0")] == f"https://{host}/nodeinfo/2.0"
    assert links[NODEINFO_SCHEMA.format("2.1")] == f"https://{host}/nodeinfo/2.1"
    for version in ("2.0", "2.1"):
        assert (await client.get(links[NODEINFO_SCHEMA.format(version)])).json()["version"] == version
    application = await get_as(client, links[APPLICATION_REL])
    assert application.status_code == 200, application.text
    assert application.json()["type"] == "Application"


@pytest.mark.parametrize("version", ["2.0", "2.1"])
@pytest.mark.parametrize("host", list(USERS_PER_HOST))
async def test_nodeinfo_counts_only_the_hosts_accounts(client: httpx.AsyncClient, host: str, version: str) -> None:
    response = await client.get(f"https://{host}/nodeinfo/{version}")
    assert response.status_code == 200
    assert f'profile="{NODEINFO_SCHEMA.format(version)}#"' in response.headers["content-type"]
    info = response.json()
    assert info["version"] == version
    assert info["software"]["name"] == "microfedi" and info["software"]["version"]
    assert info["protocols"] == ["activitypub"]
    assert info["services"] == {"inbound": [], "outbound": []}
    assert info["openRegistrations"] is False
    assert info["usage"]["users"]["total"] == USERS_PER_HOST[host]
    assert isinstance(info["metadata"], dict)


async def test_unknown_nodeinfo_version_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("https://alice.test/nodeinfo/9.9")).status_code == 404


# ---------------------------------------------------------------- actors


@pytest.mark.parametrize("accept", [AS_ACCEPT, LD_ACCEPT, f"{LD_ACCEPT}, text/html;q=0.1"])
@pytest.mark.parametrize(("actor_url", "handle"), [(ALICE, "alice@alice.test"), (CAROL, "carol@carol.test")])
async def test_actor_document(client: httpx.AsyncClient, actor_url: str, handle: str, accept: str) -> None:
    response = await get_as(client, actor_url, accept)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/activity+json"
    assert "Accept" in response.headers["vary"]
    actor = response.json()
    origin = actor_url.rsplit("/", 1)[0]

    assert "https://www.w3.org/ns/activitystreams" in actor["@context"]
    assert "https://w3id.org/security/v1" in actor["@context"]
    assert actor["id"] == actor_url
    assert actor["type"] == "Person"
    assert actor["preferredUsername"] == handle.split("@")[0]
    assert actor["webfinger"] == handle
    for collection in ("inbox", "outbox", "followers", "following"):
        assert actor[collection] == f"{actor_url}/{collection}"
    assert actor["endpoints"]["sharedInbox"] == f"{origin}/inbox"
    key = actor["publicKey"]
    assert isinstance(key, dict)
    assert (key["id"], key["owner"]) == (f"{actor_url}#main-key", actor_url)
    assert rsa_key_size(key["publicKeyPem"]) == 2048
    assert isinstance(actor["name"], str) and actor["name"]
    assert isinstance(actor["summary"], str)
    assert actor["url"].startswith(origin)
    for image in ("icon", "image"):
        assert actor[image]["type"] == "Image" and actor[image]["url"].startswith("https://")
    assert actor["manuallyApprovesFollowers"] is False
    assert actor["discoverable"] is True
    assert datetime.fromisoformat(actor["published"].replace("Z", "+00:00")).tzinfo is not None
    assert actor["alsoKnownAs"] == []
    assert actor["attachment"] == []


async def test_actors_have_distinct_keys(client: httpx.AsyncClient) -> None:
    pems = {(await get_as(client, url)).json()["publicKey"]["publicKeyPem"] for url in (ALICE, CAROL)}
    assert len(pems) == 2


@pytest.mark.parametrize("accept", [BROWSER_ACCEPT, None])
async def test_browsers_get_the_html_profile_at_the_actor_url(client: httpx.AsyncClient, accept: str | None) -> None:
    headers = {"Accept": accept} if accept else {}
    response = await client.get(CAROL, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "Accept" in response.headers["vary"]
    assert "@carol@carol.test" in response.text
    assert f'<link rel="alternate" type="application/activity+json" href="{CAROL}">' in response.text


@pytest.mark.parametrize("collection", ["outbox", "followers", "following"])
async def test_empty_collections(client: httpx.AsyncClient, collection: str) -> None:
    url = f"{ALICE}/{collection}"
    response = await get_as(client, url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/activity+json"
    collection = response.json()
    assert collection["@context"] == "https://www.w3.org/ns/activitystreams"
    assert (collection["id"], collection["type"], collection["totalItems"]) == (url, "OrderedCollection", 0)
    # Empty either inline or through its first page; both shapes are valid ActivityStreams.
    assert collection.get("orderedItems", []) == []
    first = collection.get("first")
    if isinstance(first, str):
        first = (await get_as(client, first)).json()
    if first is not None:
        assert first.get("orderedItems", []) == []


@pytest.mark.parametrize("path", ["", "/outbox", "/followers"])
async def test_a_removed_account_is_gone(client: httpx.AsyncClient, path: str) -> None:
    response = await get_as(client, f"https://alice.test/@olivia{path}")
    assert response.status_code == 410
    tombstone = response.json()
    assert (tombstone["id"], tombstone["type"]) == ("https://alice.test/@olivia", "Tombstone")


async def test_unknown_account_is_404(client: httpx.AsyncClient) -> None:
    assert (await get_as(client, "https://alice.test/@nobody")).status_code == 404
    assert (await client.get("https://alice.test/@nobody/outbox")).status_code == 404


# ---------------------------------------------------------------- instance actors


async def test_each_url_host_has_its_own_instance_actor(client: httpx.AsyncClient) -> None:
    keys = set()
    for host in URL_HOSTS:
        response = await get_as(client, f"https://{host}/actor")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/activity+json"
        actor = response.json()
        actor_id = f"https://{host}/actor"
        assert (actor["id"], actor["type"], actor["preferredUsername"]) == (actor_id, "Application", host)
        assert actor["publicKey"]["id"] == f"{actor_id}#main-key"
        assert actor["publicKey"]["owner"] == actor_id
        assert rsa_key_size(actor["publicKey"]["publicKeyPem"]) == 2048
        keys.add(actor["publicKey"]["publicKeyPem"])

        for resource in (f"acct:{host}@{host}", actor_id):
            found = await webfinger(client, host, resource)
            assert found.status_code == 200, found.text
            assert found.json()["subject"] == f"acct:{host}@{host}"
            assert self_link(found.json()) == actor_id
    assert len(keys) == len(URL_HOSTS)


async def test_a_split_domain_host_has_no_instance_actor(client: httpx.AsyncClient) -> None:
    assert (await get_as(client, "https://carol.test/actor")).status_code == 404


# ---------------------------------------------------------------- changes while running


async def test_a_domain_added_through_the_app_database_is_served_at_once(served: Any) -> None:
    client: httpx.AsyncClient = served.client
    assert (await client.get("https://erin.test/.well-known/nodeinfo")).status_code == 404

    await add_domain(served.instance.db, "erin.test")

    assert (await client.get("https://erin.test/.well-known/nodeinfo")).status_code == 200
    assert (await get_as(client, "https://erin.test/actor")).json()["type"] == "Application"


async def test_users_added_and_removed_by_another_process_are_seen_at_once(served: Any, settings: Settings) -> None:
    client: httpx.AsyncClient = served.client
    # Cache alice's documents first, so a stale cache would show below.
    assert (await get_as(client, ALICE)).status_code == 200
    assert (await webfinger(client, "alice.test", "acct:alice@alice.test")).status_code == 200

    with Database(settings.database_path) as cli_database:  # a second opener, as the CLI is
        await add_domain(cli_database, "erin.test", "fedi.test")
        await add_user(cli_database, "erin@erin.test", None)
        await remove_user(cli_database, "alice@alice.test")

    erin = await webfinger(client, "fedi.test", "acct:erin@fedi.test")
    assert erin.json()["subject"] == "acct:erin@erin.test"
    assert (await get_as(client, "https://fedi.test/@erin")).json()["webfinger"] == "erin@erin.test"
    assert (await client.get("https://fedi.test/nodeinfo/2.0")).json()["usage"]["users"]["total"] == 3

    assert (await get_as(client, ALICE)).status_code == 410
    assert (await webfinger(client, "alice.test", "acct:alice@alice.test")).status_code == 404


async def test_a_removed_domain_is_no_longer_served(served: Any) -> None:
    client: httpx.AsyncClient = served.client
    await remove_domain(served.instance.db, "dave.test", force=True)
    response = await client.get("https://dave.test/.well-known/nodeinfo")
    assert response.status_code == 404 and "unknown host dave.test" in response.text
