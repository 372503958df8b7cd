"""The inbox end to end: a real microfedi server and a remote peer, over https on loopback.

Our server (the ASGI app under uvicorn) serves alice.test on 127.0.0.2; a
`FakePeer` serves peer.test on 127.0.0.3 with its actors' keys, and our server
reaches it by name through ``resolve`` with the test CA. Requests to our inbox
are signed by independent implementations from PyPI — apsig's draft-cavage
`Signer`, and bovine's `SignedHttpClient` sending through a real aiohttp
session — and our Accept, delivered to the peer, is checked with apsig's
`Verifier` and bovine's signature checker against the key our server
publishes. Refused requests must leave nothing behind: that is read from the
SQLite file through a read-only connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import json
import shutil
import socket
import sqlite3
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag

import aiohttp
import aiohttp.abc
import apsig.draft.sign as apsig_sign
import apsig.draft.verify as apsig_verify
import bovine.crypto as bovine_crypto
import httpx
import pytest
from apsig.exceptions import VerificationFailedError
from bovine.clients.signed_http import SignedHttpClient
from bovine.crypto.types import CryptographicIdentifier
from click.testing import Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from e2e.servers import wait_for
from federation.peers import ACTIVITY_JSON, FakePeer, PeerActor, ReceivedPost, new_rsa_key
from loopback_fixtures import RunningServer

from microfedi.app import create_app
from microfedi.config import load_settings

OUR_HOST = "alice.test"
AS_CONTEXT = "https://www.w3.org/ns/activitystreams"
MAX_BODY = 1 << 20  # what DESIGN.md allows an activity


# --- our server -------------------------------------------------------------------


@dataclass
class OurServer:
    """Our running server: how to reach it by name, and its SQLite file (read-only)."""

    server: RunningServer
    database: Path
    client: httpx.Client
    alice: str = f"https://{OUR_HOST}/@alice"

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, content: Any = None
    ) -> httpx.Response:
        """Send to our server by address, with the Host and TLS name a remote server would use."""
        sent = {name.lower(): value for name, value in (headers or {}).items()}
        sent.setdefault("host", OUR_HOST)
        return self.client.request(
            method, self.server.url(path), headers=sent, content=content, extensions={"sni_hostname": OUR_HOST}
        )

    def get_json(self, url: str) -> dict[str, Any]:
        """One of our documents by its https URL on alice.test."""
        path = url.removeprefix(f"https://{OUR_HOST}")
        response = self.request("GET", path, {"Accept": ACTIVITY_JSON})
        assert response.status_code == 200, response.text
        return response.json()

    def rows(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        """Rows from the server's database, read behind its back without any chance of writing."""
        with contextlib.closing(sqlite3.connect(f"file:{self.database}?mode=ro", uri=True)) as conn:
            return conn.execute(sql, args).fetchall()

    def stored(self) -> dict[str, int]:
        """How many inbox records exist: taken-in ids, inbox tasks, follows."""
        return {
            "inbox_seen": self.rows("SELECT count(*) FROM inbox_seen")[0][0],
            "inbox tasks": self.rows("SELECT count(*) FROM tasks WHERE kind = 'inbox'")[0][0],
            "follows": self.rows("SELECT count(*) FROM follows")[0][0],
        }

    def followers(self) -> tuple[int, list[str]]:
        """alice's public followers collection: its total, and the actors on its first page."""
        collection = self.get_json(f"{self.alice}/followers")
        page = self.get_json(f"{self.alice}/followers?page=1")
        return collection["totalItems"], page["orderedItems"]

    def public_key(self, key_id: str) -> dict[str, str]:
        """Our actor's published key, fetched over https as a remote server would."""
        key = self.get_json(urldefrag(key_id).url)["publicKey"]
        assert key["id"] == key_id
        return key


@dataclass
class Scene:
    """Our server, the peer (playing peer.test and other.test), and its actors on peer.test.

    pat and quinn are live; ghost was deleted (its document answers 410).
    """

    ours: OurServer
    peer: FakePeer
    peer_server: RunningServer
    ca_bundle: Path
    pat: PeerActor
    quinn: PeerActor
    ghost: PeerActor


@pytest.fixture(scope="module")
def peer_keys() -> dict[str, rsa.RSAPrivateKey]:
    """Keys for the peer's actors, made once: every test gets a fresh server that has never seen them."""
    return {username: new_rsa_key() for username in ("pat", "quinn", "ghost")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, cli_in: Callable[..., Result]) -> Path:
    """A data dir with alice@alice.test, set up once with the CLI; each test runs on a copy.

    Copying saves every test the two RSA keys the set-up generates (~0.3 s).
    """
    data_dir = tmp_path_factory.mktemp("installed") / "data"
    for command in (["init"], ["domain", "add", OUR_HOST], ["user", "add", f"alice@{OUR_HOST}"]):
        result = cli_in(data_dir, *command)
        assert result.exit_code == 0, result.output
    return data_dir


@pytest.fixture
def scene(
    serve_asgi: Callable[..., RunningServer],
    installed: Path,
    data_dir: Path,
    ca_bundle: Path,
    peer_keys: dict[str, rsa.RSAPrivateKey],
) -> Iterator[Scene]:
    peer = FakePeer(hosts=("peer.test", "other.test"))
    pat, quinn, ghost = (peer.add_actor(username, key=peer_keys[username]) for username in ("pat", "quinn", "ghost"))
    ghost.gone = True
    peer_server = serve_asgi(peer.app(), address="127.0.0.3", tls_names=peer.hosts)
    shutil.copytree(installed, data_dir)
    resolve = ",".join(peer_server.resolve_entry(host) for host in peer.hosts)
    environ = {"MICROFEDI_RESOLVE": resolve, "MICROFEDI_CA_BUNDLE": str(ca_bundle)}
    settings = load_settings(data_dir, environ=environ)
    server = serve_asgi(create_app(settings), address="127.0.0.2", tls_names=(OUR_HOST,))
    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca_bundle)), timeout=10) as client:
        yield Scene(OurServer(server, settings.database_path, client), peer, peer_server, ca_bundle, pat, quinn, ghost)


# --- activities and the independent signers -----------------------------------------


def activity(kind: str, actor: PeerActor, obj: object) -> dict[str, Any]:
    """A fresh activity by a peer actor, with an id of its own."""
    return {
        "@context": AS_CONTEXT,
        "id": f"{actor.uri}/activities/{uuid.uuid4().hex}",
        "type": kind,
        "actor": actor.uri,
        "object": obj,
    }


def dumps(doc: object) -> bytes:
    return json.dumps(doc).encode()


def apsig_headers(
    key: rsa.RSAPrivateKey, key_id: str, path: str, body: bytes, *, date: str | None = None
) -> dict[str, str]:
    """Headers apsig's draft-cavage signer makes for a POST of ``body`` to our ``path``."""
    headers = {"Content-Type": ACTIVITY_JSON}
    if date is not None:
        headers["Date"] = date
    signer = apsig_sign.Signer(
        headers=headers, private_key=key, method="POST", url=f"https://{OUR_HOST}{path}", key_id=key_id, body=body
    )
    return signer.sign()


def post_with_apsig(scene: Scene, actor: PeerActor, path: str, body: bytes) -> int:
    """POST signed by apsig, sent with httpx; the status our server answered."""
    headers = apsig_headers(actor.private_key, actor.key_id, path, body)
    return scene.ours.request("POST", path, headers, body).status_code


class PinnedResolver(aiohttp.abc.AbstractResolver):
    """aiohttp name resolution that sends one name to one address and port (curl --resolve)."""

    def __init__(self, name: str, server: RunningServer) -> None:
        self.name, self.server = name, server

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        assert host == self.name, f"unexpected lookup of {host}"
        pinned = {"hostname": host, "host": self.server.address, "port": self.server.port}
        return [{**pinned, "family": socket.AF_INET, "proto": 0, "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        return None


def post_with_bovine(scene: Scene, actor: PeerActor, path: str, body: bytes) -> int:
    """POST signed and sent by bovine's SignedHttpClient over a real aiohttp session."""
    private_pem = actor.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()

    async def send() -> int:
        tls = ssl.create_default_context(cafile=str(scene.ca_bundle))
        connector = aiohttp.TCPConnector(resolver=PinnedResolver(OUR_HOST, scene.ours.server), ssl=tls)
        async with aiohttp.ClientSession(connector=connector) as session:
            client = SignedHttpClient(session, actor.key_id, private_pem)
            async with await client.post(f"https://{OUR_HOST}{path}", body.decode()) as response:
                return response.status

    return asyncio.run(send())


# --- the independent verifiers ------------------------------------------------------


def verify_with_apsig(scene: Scene, post: ReceivedPost) -> str:
    """apsig's verdict on a POST the peer received: the key id, or VerificationFailedError."""
    key_id = post.headers["signature"].split('keyId="', 1)[1].split('"', 1)[0]
    pem = scene.ours.public_key(key_id)["publicKeyPem"]
    url = f"https://{post.host}{post.path}"
    return apsig_verify.Verifier(pem, "POST", url, post.headers, post.body).verify(raise_on_fail=True)


def verify_with_bovine(scene: Scene, post: ReceivedPost) -> str | None:
    """bovine's verdict: the key's owner, or None; bovine fetches the key from our server itself."""

    async def retrieve_key(key_id: str) -> CryptographicIdentifier:
        key = scene.ours.public_key(key_id)
        return CryptographicIdentifier.from_pem(key["publicKeyPem"], key["owner"])

    async def read_body() -> bytes:
        return post.body

    validate = bovine_crypto.build_validate_http_signature_raw(retrieve_key)
    url = f"https://{post.host}{post.path}"
    return asyncio.run(validate("POST", url, post.headers, read_body))


def accepts_at(scene: Scene, actor: PeerActor) -> list[ReceivedPost]:
    """The Accepts that reached ``actor``'s inbox at the peer."""
    return [
        post
        for post in scene.peer.received()
        if f"https://{post.host}{post.path}" == actor.inbox and post.activity()["type"] == "Accept"
    ]


# --- accepted, processed, answered ---------------------------------------------------


@pytest.mark.parametrize(
    "send, path",
    [(post_with_apsig, "/@alice/inbox"), (post_with_bovine, "/inbox")],
    ids=["apsig-to-personal-inbox", "bovine-to-shared-inbox"],
)
def test_signed_follow_is_accepted_and_our_accept_verifies_with_apsig_and_bovine(
    scene: Scene, send: Callable[[Scene, PeerActor, str, bytes], int], path: str
) -> None:
    follow = activity("Follow", scene.pat, scene.ours.alice)

    assert send(scene, scene.pat, path, dumps(follow)) == 202

    wait_for(lambda: scene.ours.followers() == (1, [scene.pat.uri]), timeout=10, interval=0.05, what="the follower")
    (accept,) = wait_for(lambda: accepts_at(scene, scene.pat), timeout=10, interval=0.05, what="our Accept at the peer")
    answer = accept.activity()
    assert answer["actor"] == scene.ours.alice
    assert isinstance(answer["object"], dict) and answer["object"]["id"] == follow["id"]
    assert verify_with_apsig(scene, accept) == f"{scene.ours.alice}#main-key"
    assert verify_with_bovine(scene, accept) == scene.ours.alice
    # The verifiers do check: the same request with another Date fails both.
    later = email.utils.formatdate(time.time() + 1, usegmt=True)
    altered = dataclasses.replace(accept, headers={**accept.headers, "date": later})
    with pytest.raises(VerificationFailedError):
        verify_with_apsig(scene, altered)
    assert verify_with_bovine(scene, altered) is None


def test_an_activity_delivered_twice_is_processed_once(scene: Scene) -> None:
    follow = activity("Follow", scene.pat, scene.ours.alice)
    # A redelivery is signed again (a new Date), as a sender's retry would be.
    assert post_with_apsig(scene, scene.pat, "/inbox", dumps(follow)) == 202
    assert post_with_apsig(scene, scene.pat, "/@alice/inbox", dumps(follow)) == 202

    # The deliver task can finish before the inbox task that queued it is marked done.
    settled = [("deliver", "done"), ("inbox", "done")]
    tasks = "SELECT kind, state FROM tasks WHERE kind IN ('inbox', 'deliver') ORDER BY kind"
    wait_for(
        lambda: scene.ours.rows(tasks) == settled,
        timeout=10,
        interval=0.05,
        what="one Follow taken in, one Accept sent",
    )
    assert scene.ours.rows("SELECT activity_id FROM inbox_seen") == [(follow["id"],)]
    assert scene.ours.rows("SELECT follower, state FROM follows") == [(scene.pat.uri, "accepted")]
    assert len(accepts_at(scene, scene.pat)) == 1


def test_a_rotated_key_is_fetched_again_once(scene: Scene) -> None:
    pat, peer = scene.pat, scene.peer
    # Likes of an actor (not a post) are inert: the only GETs of pat are key fetches.
    first, second, forged = (activity("Like", pat, scene.ours.alice) for _ in range(3))
    assert post_with_apsig(scene, pat, "/inbox", dumps(first)) == 202
    assert peer.fetches(pat) == 1

    old_key = peer.rotate_key(pat)
    assert post_with_apsig(scene, pat, "/inbox", dumps(second)) == 202
    assert peer.fetches(pat) == 2  # the cached key failed; one fetch found the new one

    # Signed with the old key: one re-fetch, no more, and a refusal.
    headers = apsig_headers(old_key, pat.key_id, "/inbox", dumps(forged))
    response = scene.ours.request("POST", "/inbox", headers, dumps(forged))
    assert response.status_code == 401, response.text
    assert "does not verify" in response.text
    assert peer.fetches(pat) == 3
    assert sorted(scene.ours.rows("SELECT activity_id FROM inbox_seen")) == sorted([(first["id"],), (second["id"],)])
    assert scene.ours.stored()["inbox tasks"] == 2


def test_a_delete_from_an_actor_whose_key_is_gone_is_accepted_and_dropped(scene: Scene) -> None:
    ghost = scene.ghost
    delete = activity("Delete", ghost, ghost.uri)

    assert post_with_apsig(scene, ghost, "/inbox", dumps(delete)) == 202

    assert scene.peer.fetches(ghost) == 1
    assert scene.ours.stored() == {"inbox_seen": 0, "inbox tasks": 0, "follows": 0}
    assert scene.ours.rows("SELECT count(*) FROM remote_actors WHERE uri = ?", ghost.uri) == [(0,)]


def test_an_activity_of_exactly_one_mebibyte_is_accepted(scene: Scene) -> None:
    like = activity("Like", scene.pat, scene.ours.alice)
    body = dumps({**like, "padding": ""})
    body = dumps({**like, "padding": "x" * (MAX_BODY - len(body))})
    assert len(body) == MAX_BODY

    assert post_with_apsig(scene, scene.pat, "/inbox", body) == 202
    assert scene.ours.rows("SELECT activity_id FROM inbox_seen") == [(like["id"],)]


def test_an_id_claimed_by_another_host_does_not_shadow_the_real_activity(scene: Scene) -> None:
    olga = scene.peer.add_actor("olga", host="other.test")
    genuine = activity("Follow", olga, scene.ours.alice)
    # pat, on peer.test, sends first an activity carrying the id other.test will use;
    # refusing it would be as right as accepting it.
    squatter = {**activity("Like", scene.pat, scene.ours.alice), "id": genuine["id"]}
    post_with_apsig(scene, scene.pat, "/inbox", dumps(squatter))

    assert post_with_apsig(scene, olga, "/inbox", dumps(genuine)) == 202
    # Taking in is done before the 202: the genuine activity must have its task now.
    queued = "SELECT count(*) FROM tasks WHERE kind = 'inbox' AND json_extract(payload, '$.signer') = ?"
    assert scene.ours.rows(queued, olga.uri) == [(1,)]
    wait_for(lambda: scene.ours.followers() == (1, [olga.uri]), timeout=10, interval=0.05, what="olga as a follower")


# --- refused, and nothing stored -----------------------------------------------------


@dataclass
class Attempt:
    """A request to our inbox that must be refused with ``status`` for ``reason``."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    reason: str
    chunked: bool = False  # send without Content-Length, as a stream


def signed(
    actor: PeerActor, doc_or_body: object, status: int, reason: str, *, path: str = "/inbox", date: str | None = None
) -> Attempt:
    """An Attempt signed by ``actor`` with apsig; refused for what it carries, not for its signature."""
    body = doc_or_body if isinstance(doc_or_body, bytes) else dumps(doc_or_body)
    headers = apsig_headers(actor.private_key, actor.key_id, path, body, date=date)
    return Attempt(path, headers, body, status, reason)


def unsigned(s: Scene) -> Attempt:
    return Attempt(
        "/inbox", {"Content-Type": ACTIVITY_JSON}, dumps(activity("Follow", s.pat, s.ours.alice)), 401, "not signed"
    )


def tampered_body(s: Scene) -> Attempt:
    attempt = signed(s.pat, activity("Follow", s.pat, s.ours.alice), 401, "does not match the body")
    attempt.body = attempt.body.replace(b"Follow", b"Block_")
    return attempt


def tampered_body_and_digest(s: Scene) -> Attempt:
    attempt = signed(s.pat, activity("Follow", s.pat, s.ours.alice), 401, "does not verify")
    attempt.body = attempt.body.replace(b"Follow", b"Block_")
    attempt.headers["digest"] = apsig_sign.calculate_digest(attempt.body)
    return attempt


def two_hours_old(s: Scene) -> Attempt:
    date = email.utils.formatdate(time.time() - 7200, usegmt=True)
    return signed(s.pat, activity("Follow", s.pat, s.ours.alice), 401, "too old", date=date)


def two_hours_ahead(s: Scene) -> Attempt:
    date = email.utils.formatdate(time.time() + 7200, usegmt=True)
    return signed(s.pat, activity("Follow", s.pat, s.ours.alice), 401, "in the future", date=date)


def signer_is_not_the_actor(s: Scene) -> Attempt:
    return signed(s.pat, activity("Follow", s.quinn, s.ours.alice), 401, f"signed by {s.pat.uri}")


def key_gone_but_not_a_delete(s: Scene) -> Attempt:
    return signed(s.ghost, activity("Follow", s.ghost, s.ours.alice), 401, "cannot get the signing key")


def id_on_another_host(s: Scene) -> Attempt:
    squatter = {**activity("Follow", s.pat, s.ours.alice), "id": "https://other.test/activities/1"}
    return signed(s.pat, squatter, 400, "not on its actor's host")


def oversized(s: Scene) -> Attempt:
    doc = {**activity("Follow", s.pat, s.ours.alice), "padding": "x" * MAX_BODY}
    return signed(s.pat, doc, 413, "larger than")


def oversized_without_length(s: Scene) -> Attempt:
    return dataclasses.replace(oversized(s), chunked=True)


def not_an_activity(s: Scene) -> Attempt:
    return signed(s.pat, {"id": f"{s.pat.uri}/notes/1", "content": "hello"}, 400, "not an activity")


def activity_without_actor(s: Scene) -> Attempt:
    return signed(
        s.pat, {"id": f"{s.pat.uri}/activities/1", "type": "Follow", "object": s.ours.alice}, 400, "not an activity"
    )


def json_array(s: Scene) -> Attempt:
    return signed(s.pat, [activity("Follow", s.pat, s.ours.alice)], 400, "not an activity")


def not_json(s: Scene) -> Attempt:
    return signed(s.pat, b"Follow me, please", 400, "not JSON")


def personal_inbox_of_nobody(s: Scene) -> Attempt:
    return signed(
        s.pat, activity("Follow", s.pat, f"https://{OUR_HOST}/@nobody"), 404, "no account", path="/@nobody/inbox"
    )


REFUSALS = [
    unsigned,
    tampered_body,
    tampered_body_and_digest,
    two_hours_old,
    two_hours_ahead,
    signer_is_not_the_actor,
    key_gone_but_not_a_delete,
    id_on_another_host,
    oversized,
    oversized_without_length,
    not_an_activity,
    activity_without_actor,
    json_array,
    not_json,
    personal_inbox_of_nobody,
]


@pytest.mark.parametrize("build", REFUSALS, ids=[f.__name__ for f in REFUSALS])
def test_refused_requests_leave_nothing_stored(scene: Scene, build: Callable[[Scene], Attempt]) -> None:
    attempt = build(scene)
    content: Any = attempt.body
    if attempt.chunked:
        content = iter([attempt.body[i : i + 65536] for i in range(0, len(attempt.body), 65536)])

    response = scene.ours.request("POST", attempt.path, attempt.headers, content)

    assert response.status_code == attempt.status, response.text
    assert attempt.reason in response.text
    assert scene.ours.stored() == {"inbox_seen": 0, "inbox tasks": 0, "follows": 0}
