"""The fediverse-pasture input corpus, every input delivered to our inbox.

`fediverse-pasture-inputs` (PyPI) is the corpus behind the public fediverse
support tables: about 260 variations of a post (HTML tags, attachments,
mentions, addressing, JSON-LD quirks…). Each input is turned into a Create the
way the pasture itself does it — its own `ActivitySender` builds the Note from
its skeleton, applies the input, addresses our account and wraps it — after
the pasture's actor (``http://pasture-one-actor/…``) is rewritten to an actor
of a `FakePeer` on peer.test, as the pasture rewrites it to its own. The
Create is signed with apsig and POSTed over https to alice's inbox on our
server; alice follows the peer's actor, so what we accept reaches her home
timeline.

Every input must end one of three ways, each with its reason: accepted (a
post is stored), refused (a 4xx answer, or the inbox task dead with the
reason in `last_error`), or dropped (the object is not a kind of post we
show, which Mastodon drops too). Never a 5xx, never a crash left retrying.
What is accepted must render: its stored HTML is a fixed point of the
sanitizer, the `_post.html` partial shows it, and it is in alice's home
timeline as `microfedi timeline --json` prints it.

The outcomes are recorded as the test's ``pasture_outcomes`` property, from
which ``tools/pasture_table.py`` writes docs/pasture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import ssl
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import fediverse_pasture_inputs
import httpx
import pytest
from bovine.activitystreams import Actor
from click.testing import Result
from e2e.servers import wait_for
from federation.peers import ACTIVITY_JSON, FakePeer, PeerActor
from federation.test_inbox import OUR_HOST, OurServer, activity, apsig_headers, dumps
from fediverse_pasture.runner import ActivitySender
from loopback_fixtures import RunningServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from microfedi.app import create_app
from microfedi.config import load_settings
from microfedi.content import sanitize_html
from microfedi.federation.notes import NOTE_TYPES
from microfedi.store import posts as pq
from microfedi.web.templates import make_templates

ALICE = f"alice@{OUR_HOST}"
# The pasture's own actor and host, named in the inputs.
PASTURE_ACTOR = "http://pasture-one-actor/actor"
PASTURE_ORIGIN = "http://pasture-one-actor/"
# The notes the pasture serves as assets, which inputs reply to.
PASTURE_NOTES = {"note1.jsonap": "One", "note2.jsonap": "Two"}

ACCEPTED, REFUSED, DROPPED = "accepted", "refused", "dropped"
# Verdicts that are bugs of ours: an answer of 500 and up; a handler that
# failed in a way that is retried (a crash is), on input that will never
# change; a post taken in (202) and then neither stored nor refused.
SERVER_ERROR, RETRYING, LOST = "server error", "retrying", "lost"
# The test property the outcomes are recorded under, for tools/pasture_table.py.
OUTCOMES_PROPERTY = "pasture_outcomes"


# --- the corpus ---------------------------------------------------------------------


@dataclass(frozen=True)
class PastureInput:
    """One example of one input set of the corpus, as the package has it."""

    set_name: str
    number: int
    example: dict[str, Any]

    @property
    def slug(self) -> str:
        """A name for ids and messages: ``html_tags-3``."""
        return f"{self.set_name}-{self.number}"


def corpus() -> list[PastureInput]:
    """Every example of every input set, in the package's order."""
    return [
        PastureInput(name, number, example)
        for name, data in fediverse_pasture_inputs.available.items()
        for number, example in enumerate(data.examples)
    ]


def adapted(value: Any, actor: PeerActor) -> Any:
    """An input with the pasture's actor and host replaced by ``actor`` and its host."""
    if isinstance(value, str):
        return value.replace(PASTURE_ACTOR, actor.uri).replace(PASTURE_ORIGIN, f"https://{actor.host}/")
    if isinstance(value, list):
        return [adapted(item, actor) for item in value]
    if isinstance(value, dict):
        return {key: adapted(item, actor) for key, item in value.items()}
    return value


def pasture_peer_app(peer: FakePeer, author: PeerActor) -> Starlette:
    """The peer's app, serving also the pasture's notes that inputs reply to, by ``author``."""

    async def note_view(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in PASTURE_NOTES:
            return Response("no such asset\n", 404)
        note = {
            "@context": "https://www.w3.org/ns/activitystreams",
            "id": str(request.url),
            "type": "Note",
            "attributedTo": author.uri,
            "to": ["https://www.w3.org/ns/activitystreams#Public"],
            "content": PASTURE_NOTES[name],
            "published": "2024-01-06T13:11:45Z",
        }
        return Response(json.dumps(note), media_type=ACTIVITY_JSON)

    return Starlette(routes=[*peer.app().routes, Route("/assets/{name}", note_view)])


# --- sending, the pasture's way -------------------------------------------------------


def post_signed(ours: OurServer, actor: PeerActor, path: str, doc: dict[str, Any]) -> httpx.Response:
    """POST ``doc`` to our ``path``, signed by apsig as ``actor``."""
    body = dumps(doc)
    return ours.request("POST", path, apsig_headers(actor.private_key, actor.key_id, path, body), body)


@dataclass
class SignedTransport:
    """What the pasture's ActivitySender asks of a BovineActor, done over https to our server.

    ``get`` fetches one of our documents; ``post`` signs as ``actor`` and keeps
    every answer by activity id.
    """

    ours: OurServer
    actor: PeerActor
    answers: dict[str, httpx.Response] = field(default_factory=dict)

    async def get(self, url: str) -> dict[str, Any]:
        return self.ours.get_json(url)

    async def post(self, inbox: str, doc: dict[str, Any]) -> int:
        self.answers[doc["id"]] = post_signed(self.ours, self.actor, inbox.removeprefix(f"https://{OUR_HOST}"), doc)
        return self.answers[doc["id"]].status_code


def ids_for(actor: PeerActor, item: PastureInput) -> Callable[..., str]:
    """The sender's id maker, with ids named after the input (random ones would make every table differ)."""

    def make_id(activity: bool = False) -> str:
        return f"https://{actor.host}/{'activity' if activity else 'object'}/{item.slug}"

    return make_id


@dataclass(frozen=True)
class Delivery:
    """One input as delivered: the Create sent, and our server's answer."""

    item: PastureInput
    create: dict[str, Any]
    status: int
    answer: str


async def deliver_corpus(ours: OurServer, actor: PeerActor, recipient: str, items: list[PastureInput]) -> list[Delivery]:
    """Send every input to ``recipient`` with the pasture's ActivitySender, one after the other."""
    transport: Any = SignedTransport(ours, actor)  # in the place of a BovineActor
    sender = ActivitySender.for_actor(transport, Actor(id=actor.uri, inbox=actor.inbox, outbox=actor.uri + "/outbox"))
    sender.sleep_after_getting_inbox = False
    deliveries = []
    for item in items:
        sender.make_id = ids_for(actor, item)
        example = adapted(item.example, actor)
        # As the pasture's ModifierBuilder: content "text", then the input over the Note skeleton.
        sender.init_create_note(lambda note, example=example: {**note, "content": "text", **example})
        await sender.send(recipient)
        assert sender.activity is not None, f"{item.slug} was not sent"
        answer = transport.answers[sender.activity["id"]]
        deliveries.append(Delivery(item, sender.activity, answer.status_code, answer.text.strip()))
    return deliveries


# --- what became of each input ---------------------------------------------------------


@dataclass
class Outcome:
    """What our server made of one input: ``verdict`` with its ``reason``, and the post shown."""

    set_name: str
    number: int
    example: dict[str, Any]
    status: int
    verdict: str
    reason: str = ""
    post: dict[str, Any] | None = None


@contextlib.contextmanager
def read_only(database: Path) -> Iterator[sqlite3.Connection]:
    """A connection to the server's database that cannot write, with rows as our store reads them."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        conn.row_factory = sqlite3.Row
        yield conn


def processing_unfinished(ours: OurServer) -> int:
    """Inbox tasks not yet run to an end (a task failed and waiting for a retry counts as ended)."""
    unfinished = "SELECT count(*) FROM tasks WHERE kind = 'inbox' AND (state = 'running' OR (state = 'queued' AND attempts = 0))"
    return ours.rows(unfinished)[0][0]


def shown_fields(post: pq.Post) -> dict[str, Any]:
    """The stored fields of a post that a reader sees."""
    return {
        "type": post.type,
        "visibility": post.visibility,
        "summary": post.summary,
        "sensitive": post.sensitive,
        "content": post.content,
        "language": post.language,
        "in_reply_to": post.in_reply_to,
        "url": post.url,
        "hashtags": post.hashtags,
        "mentions": [m["href"] for m in post.mentions],
        "emoji": [e["name"] for e in post.emoji],
        "attachments": post.attachments,
        "poll": post.poll,
    }


def judged(delivery: Delivery, conn: sqlite3.Connection) -> tuple[Outcome, pq.Post | None]:
    """The outcome of one delivery, read from the answer, the inbox task and the posts table."""
    item, obj = delivery.item, delivery.create.get("object")
    outcome = Outcome(item.set_name, item.number, item.example, delivery.status, REFUSED, delivery.answer)
    if delivery.status >= 400:
        outcome.verdict = SERVER_ERROR if delivery.status >= 500 else REFUSED
        return outcome, None
    task = conn.execute(
        "SELECT state, last_error FROM tasks WHERE kind = 'inbox' AND json_extract(payload, '$.activity.id') = ?",
        (delivery.create["id"],),
    ).fetchone()
    if task is None:
        outcome.verdict, outcome.reason = LOST, "answered 202, but no inbox task was queued"
    elif task["state"] == "dead":
        outcome.reason = task["last_error"]
    elif task["state"] != "done":
        outcome.verdict, outcome.reason = RETRYING, task["last_error"] or "never run"
    else:
        uri = obj.get("id") if isinstance(obj, dict) else None
        post = pq.get_post_by_uri(conn, uri) if isinstance(uri, str) else None
        if post is not None:
            outcome.verdict, outcome.reason, outcome.post = ACCEPTED, "", shown_fields(post)
            return outcome, post
        kind = obj.get("type") if isinstance(obj, dict) else None
        if any(isinstance(k, str) and k in NOTE_TYPES for k in (kind if isinstance(kind, list) else [kind])):
            outcome.verdict, outcome.reason = LOST, "processed without error, yet no post was stored"
        else:
            outcome.verdict, outcome.reason = DROPPED, f"{json.dumps(kind)} is not a kind of post we show"
    return outcome, None


def render_problems(post: pq.Post, rendered: str) -> list[str]:
    """Why a stored post does not render as stored, if it does not: unsanitized or missing HTML."""
    problems = []
    for name, html in (("content", post.content), ("summary", post.summary)):
        if sanitize_html(html) != html:
            problems.append(f"its {name} changes when sanitized again")
        elif html not in rendered:
            problems.append(f"its {name} is not in the rendered _post.html")
    return problems


def home_timeline(data_dir: Path, cli_in: Callable[..., Result]) -> set[str]:
    """The post URIs in alice's home timeline, every page, as `microfedi timeline --json` prints them."""
    uris: set[str] = set()
    page_args: list[str] = []
    while True:
        result = cli_in(data_dir, "timeline", ALICE, "home", "--json", "--limit", "200", *page_args)
        assert result.exit_code == 0, result.output
        page = json.loads(result.output)
        if not page:
            return uris
        uris |= {entry["uri"] for entry in page}
        page_args = ["--max-id", page[-1]["entry_id"]]


# --- the scene and the test --------------------------------------------------------------


@dataclass
class PastureScene:
    """Our server with alice, and the peer with pat, whom alice follows."""

    ours: OurServer
    peer: FakePeer
    pat: PeerActor
    data_dir: Path


@pytest.fixture
def pasture_scene(
    serve_asgi: Callable[..., RunningServer], data_dir: Path, ca_bundle: Path, cli_in: Callable[..., Result]
) -> Iterator[PastureScene]:
    for command in (["init"], ["domain", "add", OUR_HOST], ["user", "add", ALICE]):
        result = cli_in(data_dir, *command)
        assert result.exit_code == 0, result.output
    peer = FakePeer()
    pat = peer.add_actor("pat")
    peer_server = serve_asgi(pasture_peer_app(peer, pat), address="127.0.0.3", tls_names=peer.hosts)
    # In microfedi.toml, so that both the server and the CLI reach peer.test.
    with (data_dir / "microfedi.toml").open("a") as config:
        config.write(f'resolve = "{peer_server.resolve_entry(pat.host)}"\nca_bundle = "{ca_bundle}"\n')
    settings = load_settings(data_dir)
    server = serve_asgi(create_app(settings), address="127.0.0.2", tls_names=(OUR_HOST,))
    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca_bundle)), timeout=10) as client:
        scene = PastureScene(OurServer(server, settings.database_path, client), peer, pat, data_dir)
        follow_accepted(scene, cli_in)
        yield scene


def follow_accepted(scene: PastureScene, cli_in: Callable[..., Result]) -> None:
    """alice follows pat with the CLI; pat's Accept comes back signed."""
    result = cli_in(scene.data_dir, "follow", ALICE, scene.pat.uri)
    assert result.exit_code == 0, result.output

    def follows_sent() -> list[dict[str, Any]]:
        return [post.activity() for post in scene.peer.received() if post.activity()["type"] == "Follow"]

    (follow,) = wait_for(follows_sent, timeout=10, interval=0.05, what="alice's Follow at the peer")
    assert post_signed(scene.ours, scene.pat, "/@alice/inbox", activity("Accept", scene.pat, follow)).status_code == 202
    state = "SELECT state FROM follows WHERE followee = ?"
    wait_for(lambda: scene.ours.rows(state, scene.pat.uri) == [("accepted",)], timeout=10, interval=0.05, what="the Accept")


def test_every_pasture_input_is_accepted_or_refused_and_what_is_accepted_renders(
    pasture_scene: PastureScene, cli_in: Callable[..., Result], record_property: Callable[[str, object], None]
) -> None:
    scene, items = pasture_scene, corpus()
    assert len(items) > 250, "the corpus shrank: is fediverse-pasture-inputs what we expect?"

    deliveries = asyncio.run(deliver_corpus(scene.ours, scene.pat, scene.ours.alice, items))
    wait_for(lambda: processing_unfinished(scene.ours) == 0, timeout=30, interval=0.1, what="the inbox tasks")

    with read_only(scene.ours.database) as conn:
        judgements = [judged(delivery, conn) for delivery in deliveries]
    outcomes = [outcome for outcome, _ in judgements]
    # Recorded before any check, so that the table shows failures too.
    record_property(OUTCOMES_PROPERTY, [asdict(outcome) for outcome in outcomes])

    partial = make_templates().get_template("_post.html")
    home = home_timeline(scene.data_dir, cli_in)
    problems: dict[str, list[str]] = {}
    for outcome, post in judgements:
        slug = f"{outcome.set_name}-{outcome.number}"
        if outcome.verdict not in (ACCEPTED, REFUSED, DROPPED):
            problems[slug] = [f"{outcome.verdict} (HTTP {outcome.status}): {outcome.reason}"]
        elif outcome.verdict != ACCEPTED and not outcome.reason:
            problems[slug] = [f"{outcome.verdict} without a reason"]
        elif post is not None:
            found = render_problems(post, partial.render(post=post, handles={}))
            found += [] if post.uri in home else ["it is not in the home timeline of alice, who follows its author"]
            if found:
                problems[slug] = found
    assert not problems, json.dumps(problems, indent=1)
