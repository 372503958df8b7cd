"""Posts across three microfedi servers over https on loopback, checked on the other side.

Server A hosts alice.test: @alice writes, @ann follows her from the same
install (local fan-out, no HTTP). Server B hosts bob.test: @bob follows
@alice. Server C hosts carol.test: @carol follows @bob but not @alice, so she
is the one who must never see @alice's followers-only posts; when a test says
"C never got it", it looks in C's own database (posts and the inbox's record
of every activity it accepted), after every server's queue has run dry.

Everything is driven through the `microfedi` CLI of each install while its
server runs, the way a script or a bot would; the module shares one cluster,
so the tests run in file order and each writes its own posts.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from microfedi.config import DATABASE_FILE
from servers import Cluster, Server, wait_for

ALICE, ANN, BOB, CAROL = "alice@alice.test", "ann@alice.test", "bob@bob.test", "carol@carol.test"
ALICE_URI, BOB_URI = "https://alice.test/@alice", "https://bob.test/@bob"
ACTIVITY_JSON = {"Accept": "application/activity+json"}
# Task kinds that carry an activity between (or into) servers.
FEDERATION_KINDS = ("deliver", "inbox", "fetch-object")


@dataclass
class Fediverse:
    cluster: Cluster
    a: Server
    b: Server
    c: Server

    @property
    def servers(self) -> tuple[Server, Server, Server]:
        return self.a, self.b, self.c


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fediverse]:
    cluster = Cluster(tmp_path_factory.mktemp("posts"))
    a = cluster.add("a", "127.0.0.2", ("alice.test",))
    b = cluster.add("b", "127.0.0.3", ("bob.test",))
    c = cluster.add("c", "127.0.0.4", ("carol.test",))
    for server, domain, users in ((a, "alice.test", (ALICE, ANN)), (b, "bob.test", (BOB,)), (c, "carol.test", (CAROL,))):
        server.cli("domain", "add", domain)
        for user in users:
            server.cli("user", "add", user)
    try:
        for server in (a, b, c):
            server.start()
        b.cli("follow", BOB, ALICE)
        a.cli("follow", ANN, ALICE)
        c.cli("follow", CAROL, BOB)
        wait_for(
            lambda: ALICE in accepted(b, BOB) and ALICE in accepted(a, ANN) and BOB in accepted(c, CAROL),
            what="bob and ann follow alice, carol follows bob",
        )
        yield Fediverse(cluster, a, b, c)
    finally:
        # Our idle keep-alive connections would hold a server's graceful shutdown for its full 10 s.
        cluster.client().close()
        cluster.stop()


# ---------------------------------------------------------------- reading each side


def accepted(server: Server, handle: str) -> list[str]:
    """Handles `handle` follows, accepted."""
    return [entry["handle"] for entry in json.loads(server.cli("following", handle, "--json").stdout)["accepted"]]


def timeline(server: Server, handle: str, *which: str) -> list[dict[str, Any]]:
    """A timeline as the CLI shows it to scripts (`home` unless told)."""
    return json.loads(server.cli("timeline", handle, *which, "--limit", "200", "--json").stdout)


def notifications(server: Server, handle: str) -> list[dict[str, Any]]:
    return json.loads(server.cli("notifications", handle, "--limit", "200", "--json").stdout)


def entry(items: list[dict[str, Any]], uri: str, boosted_by: str | None = None) -> dict[str, Any] | None:
    """The timeline entry for the post `uri` (as a boost by `boosted_by` when given)."""
    for item in items:
        if item["uri"] == uri and (boosted_by is None or item["boosted_by"] == boosted_by):
            return item
    return None


def notified(server: Server, handle: str, kind: str, actor: str, post: str) -> bool:
    return any(
        n["type"] == kind and n["actor_handle"] == actor and n["post"] == post for n in notifications(server, handle)
    )


def post(server: Server, handle: str, text: str, *options: str) -> str:
    """Write a post through the CLI; its URI."""
    out = server.cli("post", handle, text, *options).stdout
    match = re.search(r"posted (\S+)", out)
    assert match, out
    return match.group(1)


def query(server: Server, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Read a running server's database directly (read-only), to see what it stored."""
    conn = sqlite3.connect(f"file:{server.data_dir / DATABASE_FILE}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def stored(server: Server, uri: str) -> bool:
    """Whether `server` holds the post `uri` or ever accepted an activity about it in its inbox."""
    posts = query(server, "SELECT count(*) FROM posts WHERE uri = ?", uri)[0][0]
    seen = query(server, "SELECT count(*) FROM inbox_seen WHERE activity_id LIKE ? || '%'", uri)[0][0]
    return posts + seen > 0


def delivery_hosts(server: Server, activity_uri: str) -> set[str]:
    """The hosts `server` queued deliveries of one of its activities to."""
    rows = query(
        server,
        "SELECT t.host FROM tasks t JOIN activities a ON a.id = json_extract(t.payload, '$.activity') "
        "WHERE t.kind = 'deliver' AND a.uri = ?",
        activity_uri,
    )
    return {host for (host,) in rows}


def settle(net: Fediverse) -> None:
    """Wait until no server has federation work left, twice in a row with nothing new in between."""
    marks = ",".join("?" for _ in FEDERATION_KINDS)

    def snapshot() -> tuple[tuple[int, int], ...]:
        return tuple(
            query(
                server,
                f"SELECT count(*) FILTER (WHERE state IN ('queued', 'running')), coalesce(max(id), 0) "
                f"FROM tasks WHERE kind IN ({marks})",
                *FEDERATION_KINDS,
            )[0]
            for server in net.servers
        )

    previous: list[tuple[tuple[int, int], ...]] = []

    def quiet() -> bool:
        now = snapshot()
        still = bool(previous) and previous[-1] == now and all(pending == 0 for pending, _ in now)
        previous.append(now)
        return still

    wait_for(quiet, what="every server's federation queue to run dry")


def eventually(check: Callable[[], object], what: str) -> Any:
    return wait_for(check, timeout=30, what=what)


def fetch(net: Fediverse, uri: str, headers: dict[str, str] = ACTIVITY_JSON) -> Any:
    return net.cluster.client().get(uri, headers=headers)


# ---------------------------------------------------------------- visibility


def test_public_post_reaches_followers_local_and_remote(net: Fediverse) -> None:
    uri = post(net.a, ALICE, "Good morning #Sunrise, see https://example.com/dawn", "--language", "en")
    # ann is on alice's own install: her home has it the moment the post is written,
    # before the server's task loop has run, and nothing was queued for alice.test.
    assert entry(timeline(net.a, ANN), uri) is not None
    assert delivery_hosts(net.a, f"{uri}/activity") == {"bob.test"}
    arrived = eventually(lambda: entry(timeline(net.b, BOB), uri), "the post in bob's home")
    assert arrived["author_handle"] == ALICE and arrived["visibility"] == "public"
    assert "Good morning" in arrived["text"] and arrived["hashtags"] == ["sunrise"]
    assert arrived["language"] == "en"
    assert 'href="https://example.com/dawn"' in arrived["content"]
    assert entry(timeline(net.b, BOB, "federated"), uri) is not None
    assert entry(timeline(net.b, BOB, "local"), uri) is None
    assert entry(timeline(net.a, ALICE, "local"), uri) is not None
    assert entry(timeline(net.b, BOB, "--tag", "sunrise"), uri) is not None
    page = fetch(net, uri)
    assert page.status_code == 200 and page.json()["type"] == "Note"


def test_unlisted_post_reaches_followers_but_no_public_timeline(net: Fediverse) -> None:
    uri = post(net.a, ALICE, "Quiet #sunrise note", "--visibility", "unlisted")
    assert entry(timeline(net.a, ANN), uri) is not None
    arrived = eventually(lambda: entry(timeline(net.b, BOB), uri), "the unlisted post in bob's home")
    assert arrived["visibility"] == "unlisted"
    assert entry(timeline(net.b, BOB, "federated"), uri) is None
    assert entry(timeline(net.b, BOB, "--tag", "sunrise"), uri) is None
    assert entry(timeline(net.a, ALICE, "local"), uri) is None
    assert entry(timeline(net.a, ALICE, "federated"), uri) is None


def test_followers_only_post_reaches_followers_and_no_one_else(net: Fediverse) -> None:
    uri = post(net.a, ALICE, "Only for my followers", "--visibility", "private")
    assert entry(timeline(net.a, ANN), uri) is not None
    arrived = eventually(lambda: entry(timeline(net.b, BOB), uri), "the private post in bob's home")
    assert arrived["visibility"] == "private"
    assert entry(timeline(net.b, BOB, "federated"), uri) is None
    assert delivery_hosts(net.a, f"{uri}/activity") == {"bob.test"}
    settle(net)
    assert entry(timeline(net.c, CAROL), uri) is None
    assert entry(timeline(net.c, CAROL, "federated"), uri) is None
    assert not stored(net.c, uri), "carol's server got alice's followers-only post"
    # Nor can anyone fetch it from alice's server.
    assert fetch(net, uri).status_code == 404
    assert fetch(net, uri, {"Accept": "text/html"}).status_code == 404


def test_direct_post_reaches_only_the_mentioned_account(net: Fediverse) -> None:
    uri = post(net.a, ALICE, "@carol@carol.test just between us", "--visibility", "direct")
    arrived = eventually(lambda: entry(timeline(net.c, CAROL), uri), "the direct post in carol's home")
    assert arrived["visibility"] == "direct" and arrived["mentions"] == ["https://carol.test/@carol"]
    assert notified(net.c, CAROL, "mention", ALICE, uri)
    assert delivery_hosts(net.a, f"{uri}/activity") == {"carol.test"}
    # alice's followers, local and remote, do not get it.
    assert entry(timeline(net.a, ANN), uri) is None
    settle(net)
    assert entry(timeline(net.b, BOB), uri) is None
    assert not stored(net.b, uri), "bob's server got a direct message meant for carol"
    assert fetch(net, uri).status_code == 404


# ---------------------------------------------------------------- conversations and mentions


@pytest.fixture(scope="module")
def morning_post(net: Fediverse) -> str:
    """A public post of alice's that bob has received: the one replied to, liked and boosted."""
    uri = post(net.a, ALICE, "What is everyone reading?")
    eventually(lambda: entry(timeline(net.b, BOB), uri), "the post in bob's home")
    return uri


def test_reply_and_reply_back_keep_the_conversation(net: Fediverse, morning_post: str) -> None:
    reply = post(net.b, BOB, "A book about tiny servers", "--reply-to", morning_post)
    # The reply names alice, so it reaches her server as a mention, in its thread.
    eventually(lambda: notified(net.a, ALICE, "mention", BOB, reply), "alice notified of bob's reply")
    on_a = entry(timeline(net.a, ALICE, "federated"), reply)
    assert on_a is not None and on_a["in_reply_to"] == morning_post
    assert entry(timeline(net.a, ALICE), morning_post)["replies"] == 1
    answer = post(net.a, ALICE, "@bob@bob.test sounds good", "--reply-to", reply)
    on_b = eventually(lambda: entry(timeline(net.b, BOB), answer), "alice's answer in bob's home")
    assert on_b["in_reply_to"] == reply
    assert notified(net.b, BOB, "mention", ALICE, answer)
    # Each server's page of a post in the conversation shows the whole thread, in order.
    for page_of in (morning_post, reply):
        articles = fetch(net, page_of, {"Accept": "text/html"}).text.split("<article")[1:]
        parts = ("What is everyone reading?", "A book about tiny servers", "sounds good")
        assert len(articles) == len(parts), page_of
        for article, part in zip(articles, parts):
            assert part in article, (page_of, part)


def test_mention_of_someone_who_does_not_follow(net: Fediverse) -> None:
    uri = post(net.a, ALICE, "Hello @carol@carol.test, welcome!")
    eventually(lambda: notified(net.c, CAROL, "mention", ALICE, uri), "carol notified of the mention")
    shown = entry(timeline(net.c, CAROL, "federated"), uri)
    assert shown is not None and "welcome" in shown["text"]
    assert delivery_hosts(net.a, f"{uri}/activity") == {"bob.test", "carol.test"}


# ---------------------------------------------------------------- likes and boosts


def test_like_and_undo(net: Fediverse, morning_post: str) -> None:
    net.b.cli("like", BOB, morning_post)
    eventually(lambda: notified(net.a, ALICE, "favourite", BOB, morning_post), "alice notified of the like")
    assert entry(timeline(net.a, ALICE), morning_post)["likes"] == 1
    net.b.cli("like", BOB, morning_post, "--undo")
    eventually(lambda: entry(timeline(net.a, ALICE), morning_post)["likes"] == 0, "the like undone on alice's side")


def test_boost_reaches_the_boosters_followers_and_undo(net: Fediverse, morning_post: str) -> None:
    net.b.cli("boost", BOB, morning_post)
    # carol follows bob, not alice: she sees alice's post because bob boosted it.
    boosted = eventually(
        lambda: entry(timeline(net.c, CAROL), morning_post, boosted_by=BOB_URI), "the boost in carol's home"
    )
    assert boosted["boosted_by_handle"] == BOB and boosted["author_handle"] == ALICE
    assert "What is everyone reading?" in boosted["text"]
    eventually(lambda: notified(net.a, ALICE, "reblog", BOB, morning_post), "alice notified of the boost")
    assert entry(timeline(net.a, ALICE), morning_post)["boosts"] == 1
    net.b.cli("boost", BOB, morning_post, "--undo")
    eventually(lambda: entry(timeline(net.c, CAROL), morning_post) is None, "the boost gone from carol's home")
    eventually(lambda: entry(timeline(net.a, ALICE), morning_post)["boosts"] == 0, "the boost undone on alice's side")


# ---------------------------------------------------------------- edit, delete, pin


def test_edit_reaches_followers_and_notifies_boosters(net: Fediverse) -> None:
    uri = post(net.a, ALICE, "The meeting is on Tuesday")
    eventually(lambda: entry(timeline(net.b, BOB), uri), "the post in bob's home")
    net.b.cli("boost", BOB, uri)
    net.a.cli("edit", ALICE, uri, "The meeting is on Wednesday", "--cw", "schedule")
    edited = eventually(
        lambda: (found := entry(timeline(net.b, BOB), uri)) and "Wednesday" in found["text"] and found,
        "the edit on bob's side",
    )
    assert "Tuesday" not in edited["content"]
    assert edited["edited"] is not None and edited["summary"] == "schedule"
    eventually(lambda: notified(net.b, BOB, "update", ALICE, uri), "bob, who boosted it, notified of the edit")
    note = fetch(net, uri).json()
    assert "updated" in note and "Wednesday" in note["content"]


def test_delete_removes_the_post_everywhere_and_leaves_a_tombstone(net: Fediverse) -> None:
    uri = post(net.a, ALICE, "Oops, wrong #sunrise picture")
    eventually(lambda: entry(timeline(net.b, BOB), uri), "the post in bob's home")
    net.a.cli("delete", ALICE, uri)
    assert entry(timeline(net.a, ANN), uri) is None
    eventually(lambda: entry(timeline(net.b, BOB), uri) is None, "the post gone from bob's home")
    for which in (("federated",), ("--tag", "sunrise")):
        assert entry(timeline(net.b, BOB, *which), uri) is None, which
    gone = fetch(net, uri)
    assert gone.status_code == 410 and gone.json()["type"] == "Tombstone"
    assert query(net.b, "SELECT content FROM posts WHERE uri = ?", uri) == [("",)]


def test_pin_is_listed_in_featured_and_seen_by_followers(net: Fediverse) -> None:
    uri = post(net.a, ALICE, "About me: I write small servers")
    eventually(lambda: entry(timeline(net.b, BOB), uri), "the post in bob's home")
    featured = "https://alice.test/@alice/featured"

    def pinned_on_b() -> list[tuple[Any, ...]]:
        return query(net.b, "SELECT pinned FROM posts WHERE uri = ?", uri)

    net.a.cli("pin", ALICE, uri)
    assert [item["id"] for item in fetch(net, featured).json()["orderedItems"]] == [uri]
    eventually(lambda: pinned_on_b() == [(1,)], "bob's server marks the post pinned")
    net.a.cli("pin", ALICE, uri, "--undo")
    assert fetch(net, featured).json()["orderedItems"] == []
    eventually(lambda: pinned_on_b() == [(0,)], "bob's server marks the post unpinned")


# ---------------------------------------------------------------- blocks (last: they end follows)


def test_blocked_authors_posts_and_boosts_leave_home(net: Fediverse, morning_post: str) -> None:
    sunset = post(net.c, CAROL, "Sunset over the bay")
    net.a.cli("boost", ALICE, sunset)
    eventually(lambda: entry(timeline(net.b, BOB), sunset, boosted_by=ALICE_URI), "alice's boost in bob's home")
    assert entry(timeline(net.b, BOB), morning_post) is not None

    net.b.cli("block", BOB, ALICE)
    home = timeline(net.b, BOB)
    assert [i["uri"] for i in home if ALICE_URI in (i["author"], i["boosted_by"])] == []
    eventually(lambda: BOB not in [e["handle"] for e in json.loads(net.a.cli("followers", ALICE, "--json").stdout)["accepted"]], "alice's server drops bob as a follower")
    after = post(net.a, ALICE, "Anyone still here?")
    settle(net)
    assert entry(timeline(net.b, BOB), after) is None
    assert entry(timeline(net.a, ANN), after) is not None
