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
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@dataclass
class PeerActor:
    """One actor of the peer: its URI, its current key, and whether it was deleted."""

    uri: str
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

    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def activity(self) -> dict[str, object]:
        return json.loads(self.body)


@dataclass
class FakePeer:
    """A remote server named ``host``: ``/users/NAME`` actors, personal and shared inboxes."""

    host: str = "peer.test"
    actors: dict[str, PeerActor] = field(default_factory=dict)
    _received: list[ReceivedPost] = field(default_factory=list)
    _fetches: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_actor(self, username: str) -> PeerActor:
        """A new actor with a fresh key, served from now on."""
        actor = PeerActor(f"https://{self.host}/users/{username}", username, new_rsa_key())
        self.actors[username] = actor
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
            return self._fetches[actor.username]

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
            "endpoints": {"sharedInbox": f"https://{self.host}/inbox"},
            "publicKey": {"id": actor.key_id, "owner": actor.uri, "publicKeyPem": public_pem(actor.private_key)},
        }

    async def _actor_view(self, request: Request) -> Response:
        actor = self.actors.get(request.path_params["username"])
        if actor is None:
            return Response("no such actor\n", 404)
        with self._lock:
            self._fetches[actor.username] += 1
        if actor.gone:
            tombstone = {"id": actor.uri, "type": "Tombstone"}
            return Response(json.dumps(tombstone), 410, media_type=ACTIVITY_JSON)
        return Response(json.dumps(self.document(actor)), media_type=ACTIVITY_JSON)

    async def _inbox_view(self, request: Request) -> Response:
        headers = {name.lower(): value for name, value in request.headers.items()}
        post = ReceivedPost(request.url.path, headers, await request.body())
        with self._lock:
            self._received.append(post)
        return Response(status_code=202)

    def app(self) -> Starlette:
        """The ASGI app to serve (over https, named ``host``)."""
        return Starlette(
            routes=[
                Route("/users/{username}", self._actor_view),
                Route("/users/{username}/inbox", self._inbox_view, methods=["POST"]),
                Route("/inbox", self._inbox_view, methods=["POST"]),
            ]
        )
