"""A fake remote ActivityPub server for federation tests, served with ``serve_asgi``.

`FakePeer` serves its actors' documents — each with its current public key, or
410 Gone once the actor is deleted — and keeps every POST that reaches its
inboxes, so a test can check what our server delivered and verify the
signature with code no one here wrote. A key can be rotated while the peer
runs; ``fetches`` counts the GETs of each actor document so a test can see when
our server (re-)fetched a key.

The app runs in uvicorn's thread and the test reads from its own, so the
records are guarded by a lock and handed out as copies.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ACTIVITY_JSON = "application/activity+json"


def new_rsa_key() -> rsa.RSAPrivateKey:
    """An RSA-2048 key, the size every fediverse server uses."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    """The SubjectPublicKeyInfo PEM of a private key, as actors publish it."""
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@dataclass
class PeerActor:
    """One actor of the peer: its URI, its current key, and whether it was deleted."""

    uri: str
    host: str
    username: str
    private_key: rsa.RSAPrivateKey
    gone: bool = False

    @property
    def key_id(self) -> str:
        return self.uri + "#main-key"

    @property
    def inbox(self) -> str:
        return self.uri + "/inbox"


@dataclass(frozen=True)
class ReceivedPost:
    """A POST that reached one of the peer's inboxes, as it arrived."""

    host: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def activity(self) -> dict[str, object]:
        return json.loads(self.body)


@dataclass
class FakePeer:
    """Remote servers named ``hosts``: ``/users/NAME`` actors, their inboxes, a shared ``/inbox``.

    One app plays every host; it tells them apart by the Host header.
    """

    hosts: tuple[str, ...] = ("peer.test",)
    _actors: dict[tuple[str, str], PeerActor] = field(default_factory=dict)
    _received: list[ReceivedPost] = field(default_factory=list)
    _fetches: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_actor(self, username: str, host: str | None = None, key: rsa.RSAPrivateKey | None = None) -> PeerActor:
        """A new actor on ``host`` (the first of ``hosts`` by default), served from now on.

        Its key is ``key``, or a fresh one (generating one takes a noticeable ~0.15 s).
        """
        host = host or self.hosts[0]
        assert host in self.hosts, f"{host} is not served by this peer"
        actor = PeerActor(f"https://{host}/users/{username}", host, username, key or new_rsa_key())
        self._actors[(host, username)] = actor
        return actor

    def rotate_key(self, actor: PeerActor) -> rsa.RSAPrivateKey:
        """Give ``actor`` a new key under the same key id; returns the old key."""
        old, actor.private_key = actor.private_key, new_rsa_key()
        return old

    def received(self) -> list[ReceivedPost]:
        """Every POST so far, oldest first."""
        with self._lock:
            return list(self._received)

    def fetches(self, actor: PeerActor) -> int:
        """How many times ``actor``'s document was requested."""
        with self._lock:
            return self._fetches[actor.uri]

    def document(self, actor: PeerActor) -> dict[str, object]:
        """The actor document, shaped as Mastodon serves one."""
        return {
            "@context": ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1"],
            "id": actor.uri,
            "type": "Person",
            "preferredUsername": actor.username,
            "inbox": actor.inbox,
            "outbox": actor.uri + "/outbox",
            "followers": actor.uri + "/followers",
            "following": actor.uri + "/following",
            "endpoints": {"sharedInbox": f"https://{actor.host}/inbox"},
            "publicKey": {"id": actor.key_id, "owner": actor.uri, "publicKeyPem": public_pem(actor.private_key)},
        }

    async def _actor_view(self, request: Request) -> Response:
        actor = self._actors.get((request.url.hostname or "", request.path_params["username"]))
        if actor is None:
            return Response("no such actor\n", 404)
        with self._lock:
            self._fetches[actor.uri] += 1
        if actor.gone:
            tombstone = {"id": actor.uri, "type": "Tombstone"}
            return Response(json.dumps(tombstone), 410, media_type=ACTIVITY_JSON)
        return Response(json.dumps(self.document(actor)), media_type=ACTIVITY_JSON)

    async def _inbox_view(self, request: Request) -> Response:
        headers = {name.lower(): value for name, value in request.headers.items()}
        post = ReceivedPost(request.url.hostname or "", request.url.path, headers, await request.body())
        with self._lock:
            self._received.append(post)
        return Response(status_code=202)

    def app(self) -> Starlette:
        """The ASGI app to serve (over https, with a certificate for ``hosts``)."""
        return Starlette(
            routes=[
                Route("/users/{username}", self._actor_view),
                Route("/users/{username}/inbox", self._inbox_view, methods=["POST"]),
                Route("/inbox", self._inbox_view, methods=["POST"]),
            ]
        )
