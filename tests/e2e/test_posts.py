"""Posts across three microfedi servers over https on loopback, checked on the other side.

Server A hosts alice.test: @alice writes, @ann follows her from the same
install (local fan-out, no HTTP). Server B hosts bob.test: @bob follows
@alice. Server C hosts carol.test: @carol follows @bob but not @alice, so she
is the one who must never see @alice's followers-only posts; when a test says
"C never got it", it looks in C's own database (posts, and the inbox's record
of every activity it accepted) after every server's queue has run dry.

Everything is done through the `microfedi` CLI of each install while its
server runs, the way a script or a bot would, and checked through the CLI's
`--json` output or over HTTP. Waiting polls the other side's database (cheap)
for the row the action writes in the same transaction as what the CLI then
shows. The module shares one cluster, so the tests run in file order and each
writes its own posts.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from servers import Cluster, Server, wait_for

from microfedi.config import DATABASE_FILE

ALICE, ANN, BOB, CAROL = "alice@alice.test", "ann@alice.test", "bob@bob.test", "carol@carol.test"


def uri_of(handle: str) -> str:
    """The actor URI of a handle here (every domain in this module serves its own actors)."""
    user, domain = handle.split("@")
    return f"https://{domain}/@{user}"


ALICE_URI, BOB_URI, CAROL_URI = uri_of(ALICE), uri_of(BOB), uri_of(CAROL)
ACTIVITY_JSON = {"Accept": "application/activity+json"}
HTML = {"Accept": "text/html"}
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

    def fetch(self, uri: str, headers: dict[str, str] = ACTIVITY_JSON) -> Any:
        """GET a URL from outside, as another server or a browser would."""
        return self.cluster.client().get(uri, headers=headers)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fediverse]:
    cluster = Cluster(tmp_path_factory.mktemp("posts"))
    a = cluster.add("a", "127.0.0.2", ("alice.test",))
    b = cluster.add("b", "127.0.0.3", ("bob.test",))
    c = cluster.add("c", "127.0.0.4", ("carol.test",))
    plan = ((a, "alice.test", (ALICE, ANN)), (b, "bob.test", (BOB,)), (c, "carol.test", (CAROL,)))
    follows = ((b, BOB, ALICE), (a, ANN, ALICE), (c, CAROL, BOB))
    try:
        # Each CLI call is a fresh Python process: set the three installs up side by side.
        with ThreadPoolExecutor(len(plan)) as pool:
            list(pool.map(lambda step: install(*step), plan))
            list(pool.map(lambda step: step[0].cli("follow", step[1], step[2]), follows))
        for server, follower, followee in follows:
            until_stored(
                server, f"{follower} following {followee}",
                "SELECT 1 FROM follows WHERE follower = ? AND followee = ? AND state = 'accepted'",
                uri_of(follower), uri_of(followee),
            )  # fmt: skip
        yield Fediverse(cluster, a, b, c)
    finally:
        cluster.stop()


def install(server: Server, domain: str, users: tuple[str, ...]) -> None:
    server.cli("domain", "add", domain)
    for user in users:
        server.cli("user", "add", user)
    server.start()


# ---------------------------------------------------------------- what each side shows


def followers(server: Server, handle: str) -> list[str]:
    """Handles of `handle`'s accepted followers."""
    return [entry["handle"] for entry in json.loads(server.cli("followers", handle, "--json").stdout)["accepted"]]


def timeline(server: Server, handle: str, *which: str) -> list[dict[str, Any]]:
    """A timeline as the CLI shows it to scripts (`home` unless told)."""
    return json.loads(server.cli("timeline", handle, *which, "--limit", "200", "--json").stdout)


def entry(items: list[dict[str, Any]], uri: str, boosted_by: str | None = None) -> dict[str, Any] | None:
    """The timeline entry for the post `uri` (as a boost by `boosted_by` when given)."""
    for item in items:
        if item["uri"] == uri and (boosted_by is None or item["boosted_by"] == boosted_by):
            return item
    return None


def found(items: list[dict[str, Any]], uri: str, boosted_by: str | None = None) -> dict[str, Any]:
    """The timeline entry for the post `uri`, which must be there."""
    item = entry(items, uri, boosted_by)
    assert item is not None, f"{uri} not in {[i['uri'] for i in items]}"
    return item


def notified(server: Server, handle: str, kind: str, actor: str, post: str) -> bool:
    """Whether `handle`'s notifications (as the CLI lists them) hold this one."""
    found = json.loads(server.cli("notifications", handle, "--limit", "200", "--json").stdout)
    return any(n["type"] == kind and n["actor_handle"] == actor and n["post"] == post for n in found)


def post(server: Server, handle: str, text: str, *options: str) -> str:
    """Write a post through the CLI; its URI."""
    out = server.cli("post", handle, text, *options).stdout
    match = re.search(r"posted (\S+)", out)
    assert match, out
    return match.group(1)


# ---------------------------------------------------------------- what each side stored


def query(server: Server, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Read a running server's database directly (read-only), to see what it stored."""
    conn = sqlite3.connect(f"file:{server.data_dir / DATABASE_FILE}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def until_stored(server: Server, what: str, sql: str, *params: Any) -> None:
    """Wait until `sql` finds a row on `server`."""
    wait_for(lambda: query(server, sql, *params), timeout=30, what=f"{what} on {server.name}")


def until_arrived(server: Server, uri: str) -> None:
    until_stored(server, f"post {uri}", "SELECT 1 FROM posts WHERE uri = ? AND deleted_at IS NULL", uri)


def until_notification(server: Server, kind: str, post_uri: str) -> None:
    until_stored(
        server, f"{kind} notification about {post_uri}",
        "SELECT 1 FROM notifications n JOIN posts p ON p.id = n.post_id WHERE n.type = ? AND p.uri = ?",
        kind, post_uri,
    )  # fmt: skip


def counts(server: Server, uri: str) -> tuple[int, int]:
    """(likes, boosts) of a post as `server` stored them."""
    rows = query(server, "SELECT like_count, boost_count FROM posts WHERE uri = ?", uri)
    return rows[0] if rows else (-1, -1)


def until_boosted(server: Server, booster: str, uri: str) -> None:
    until_stored(
        server, f"{booster}'s boost of {uri}",
        "SELECT 1 FROM boosts b JOIN posts p ON p.id = b.post_id WHERE b.actor = ? AND p.uri = ?",
        booster, uri,
    )  # fmt: skip


def stored(server: Server, uri: str) -> bool:
    """Whether `server` holds the local post `uri` or its inbox ever accepted the post's Create."""
    posts = query(server, "SELECT count(*) FROM posts WHERE uri = ?", uri)[0][0]
    seen = query(server, "SELECT count(*) FROM inbox_seen WHERE activity_id = ?", f"{uri}/activity")[0][0]
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

    seen: list[tuple[tuple[int, int], ...]] = []

    def quiet() -> bool:
        now = snapshot()
        idle = bool(seen) and seen[-1] == now and all(pending == 0 for pending, _ in now)
        seen.append(now)
        return idle

    wait_for(quiet, timeout=30, what="every server's federation queue to run dry")


# ---------------------------------------------------------------- visibility


def test_public_post_reaches_followers_local_and_remote(net: Fediverse) -> None:
    uri = post(net.a, ALICE, "Good morning #Sunrise, see https://example.com/dawn", "--language", "en")
    # ann is on alice's own install: her home has it the moment the post is written,
    # before the server's task loop has run, and nothing was queued for alice.test.
    found(timeline(net.a, ANN), uri)
    assert delivery_hosts(net.a, f"{uri}/activity") == {"bob.test"}
    until_arrived(net.b, uri)
    arrived = found(timeline(net.b, BOB), uri)
    assert arrived["author_handle"] == ALICE and arrived["visibility"] == "public"
    assert "Good morning" in arrived["text"] and arrived["hashtags"] == ["sunrise"]
    assert arrived["language"] == "en" and 'href="https://example.com/dawn"' in arrived["content"]
    found(timeline(net.b, BOB, "federated"), uri)
    assert entry(timeline(net.b, BOB, "local"), uri) is None
    found(timeline(net.b, BOB, "--tag", "sunrise"), uri)
    found(timeline(net.a, ALICE, "local"), uri)
    page = net.fetch(uri)
    assert page.status_code == 200 and page.json()["type"] == "Note"


def test_unlisted_post_reaches_followers_but_no_public_timeline(net: Fediverse) -> None:
    uri = post(net.a, ALICE, "Quiet #sunrise note", "--visibility", "unlisted")
    found(timeline(net.a, ANN), uri)
    until_arrived(net.b, uri)
    assert found(timeline(net.b, BOB), uri)["visibility"] == "unlisted"
    assert entry(timeline(net.b, BOB, "federated"), uri) is None
    assert entry(timeline(net.b, BOB, "--tag", "sunrise"), uri) is None
    assert entry(timeline(net.a, ALICE, "local"), uri) is None
    assert entry(timeline(net.a, ALICE, "federated"), uri) is None


def test_followers_only_post_reaches_followers_and_no_one_else(net: Fediverse) -> None:
    uri = post(net.a, ALICE, "Only for my followers", "--visibility", "private")
    found(timeline(net.a, ANN), uri)
    assert delivery_hosts(net.a, f"{uri}/activity") == {"bob.test"}
    until_arrived(net.b, uri)
    assert found(timeline(net.b, BOB), uri)["visibility"] == "private"
    assert entry(timeline(net.b, BOB, "federated"), uri) is None
    settle(net)
    assert not stored(net.c, uri), "carol's server got alice's followers-only post"
    assert entry(timeline(net.c, CAROL), uri) is None
    # Nor can anyone fetch it from alice's server.
    assert net.fetch(uri).status_code == 404
    assert net.fetch(uri, HTML).status_code == 404


def test_direct_post_reaches_only_the_mentioned_account(net: Fediverse) -> None:
    uri = post(net.a, ALICE, "@carol@carol.test just between us", "--visibility", "direct")
    assert delivery_hosts(net.a, f"{uri}/activity") == {"carol.test"}
    # alice's followers, local and remote, do not get it.
    assert entry(timeline(net.a, ANN), uri) is None
    until_arrived(net.c, uri)
    arrived = found(timeline(net.c, CAROL), uri)
    assert arrived["visibility"] == "direct" and arrived["mentions"] == [CAROL_URI]
    assert notified(net.c, CAROL, "mention", ALICE, uri)
    settle(net)
    assert not stored(net.b, uri), "bob's server got a direct message meant for carol"
    assert entry(timeline(net.b, BOB), uri) is None
    assert net.fetch(uri).status_code == 404


# ---------------------------------------------------------------- conversations and mentions


@pytest.fixture(scope="module")
def morning_post(net: Fediverse) -> str:
    """A public post of alice's that bob has received: the one replied to, liked and boosted."""
    uri = post(net.a, ALICE, "What is everyone reading?")
    until_arrived(net.b, uri)
    return uri


def test_reply_and_reply_back_keep_the_conversation(net: Fediverse, morning_post: str) -> None:
    # Posts travel with whole-second `published` times and a remote post is
    # stored in the order of its `published`, so a reply written within the
    # same second as its parent would sort above it in the thread; people (and
    # this test) reply a second or more later.
    published = found(timeline(net.a, ALICE), morning_post)["published"]
    time.sleep(max(0.0, int(published) + 1 - time.time()))
    reply = post(net.b, BOB, "A book about tiny servers", "--reply-to", morning_post)
    # The reply names alice, so it reaches her server as a mention, in its thread.
    until_notification(net.a, "mention", reply)
    assert notified(net.a, ALICE, "mention", BOB, reply)
    assert found(timeline(net.a, ALICE, "federated"), reply)["in_reply_to"] == morning_post
    assert found(timeline(net.a, ALICE), morning_post)["replies"] == 1

    answer = post(net.a, ALICE, "@bob@bob.test sounds good", "--reply-to", reply)
    until_arrived(net.b, answer)
    assert found(timeline(net.b, BOB), answer)["in_reply_to"] == reply
    assert notified(net.b, BOB, "mention", ALICE, answer)
    # Both servers' pages of a post in the conversation show the whole thread, in order.
    for page_of in (morning_post, reply):
        articles = net.fetch(page_of, HTML).text.split("<article")[1:]
        parts = ("What is everyone reading?", "A book about tiny servers", "sounds good")
        assert len(articles) == len(parts), page_of
        for article, part in zip(articles, parts):
            assert part in article, (page_of, part)


def test_mention_of_someone_who_does_not_follow(net: Fediverse) -> None:
    uri = post(net.a, ALICE, "Hello @carol@carol.test, welcome!")
    assert delivery_hosts(net.a, f"{uri}/activity") == {"bob.test", "carol.test"}
    until_notification(net.c, "mention", uri)
    assert notified(net.c, CAROL, "mention", ALICE, uri)
    assert "welcome" in found(timeline(net.c, CAROL, "federated"), uri)["text"]


# ---------------------------------------------------------------- likes and boosts


def test_like_and_undo(net: Fediverse, morning_post: str) -> None:
    net.b.cli("like", BOB, morning_post)
    until_notification(net.a, "favourite", morning_post)
    assert notified(net.a, ALICE, "favourite", BOB, morning_post)
    assert found(timeline(net.a, ALICE), morning_post)["likes"] == 1
    net.b.cli("like", BOB, morning_post, "--undo")
    wait_for(lambda: counts(net.a, morning_post)[0] == 0, what="the like undone on alice's server")
    assert found(timeline(net.a, ALICE), morning_post)["likes"] == 0


def test_boost_reaches_the_boosters_followers_and_undo(net: Fediverse, morning_post: str) -> None:
    net.b.cli("boost", BOB, morning_post)
    # carol follows bob, not alice: she sees alice's post because bob boosted it.
    until_boosted(net.c, BOB_URI, morning_post)
    boosted = found(timeline(net.c, CAROL), morning_post, boosted_by=BOB_URI)
    assert boosted["boosted_by_handle"] == BOB and boosted["author_handle"] == ALICE
    assert "What is everyone reading?" in boosted["text"]
    until_notification(net.a, "reblog", morning_post)
    assert notified(net.a, ALICE, "reblog", BOB, morning_post)
    assert found(timeline(net.a, ALICE), morning_post)["boosts"] == 1

    net.b.cli("boost", BOB, morning_post, "--undo")
    wait_for(lambda: counts(net.c, morning_post)[1] == 0, what="the boost undone on carol's server")
    wait_for(lambda: counts(net.a, morning_post)[1] == 0, what="the boost undone on alice's server")
    assert entry(timeline(net.c, CAROL), morning_post) is None
    assert found(timeline(net.a, ALICE), morning_post)["boosts"] == 0


def test_undone_like_and_boost_leave_no_notification(net: Fediverse) -> None:
    uri = post(net.a, ALICE, "Second thoughts welcome")
    until_arrived(net.b, uri)
    net.b.cli("like", BOB, uri)
    net.b.cli("boost", BOB, uri)
    wait_for(lambda: counts(net.a, uri) == (1, 1), what="the like and the boost on alice's server")
    net.b.cli("like", BOB, uri, "--undo")
    net.b.cli("boost", BOB, uri, "--undo")
    wait_for(lambda: counts(net.a, uri) == (0, 0), what="the like and the boost undone on alice's server")
    assert not notified(net.a, ALICE, "favourite", BOB, uri)
    assert not notified(net.a, ALICE, "reblog", BOB, uri)


# ---------------------------------------------------------------- edit, delete, pin


def test_edit_reaches_followers_and_notifies_boosters(net: Fediverse) -> None:
    uri = post(net.a, ALICE, "The meeting is on Tuesday")
    until_arrived(net.b, uri)
    net.b.cli("boost", BOB, uri)
    net.a.cli("edit", ALICE, uri, "The meeting is on Wednesday", "--cw", "schedule")
    until_notification(net.b, "update", uri)
    edited = found(timeline(net.b, BOB), uri)
    assert "Wednesday" in edited["text"] and "Tuesday" not in edited["content"]
    assert edited["edited"] is not None and edited["summary"] == "schedule"
    assert notified(net.b, BOB, "update", ALICE, uri)
    note = net.fetch(uri).json()
    assert "updated" in note and "Wednesday" in note["content"]


def test_delete_removes_the_post_everywhere_and_leaves_a_tombstone(net: Fediverse) -> None:
    uri = post(net.a, ALICE, "Oops, wrong #sunrise picture")
    until_arrived(net.b, uri)
    found(timeline(net.b, BOB, "--tag", "sunrise"), uri)
    net.a.cli("delete", ALICE, uri)
    assert entry(timeline(net.a, ANN), uri) is None
    until_stored(net.b, "the delete", "SELECT 1 FROM posts WHERE uri = ? AND deleted_at IS NOT NULL", uri)
    for which in ((), ("federated",), ("--tag", "sunrise")):
        assert entry(timeline(net.b, BOB, *which), uri) is None, which
    gone = net.fetch(uri)
    assert gone.status_code == 410 and gone.json()["type"] == "Tombstone"
    assert net.fetch(uri, HTML).status_code == 410


def test_pin_is_listed_in_featured_and_seen_by_followers(net: Fediverse) -> None:
    uri = post(net.a, ALICE, "About me: I write small servers")
    until_arrived(net.b, uri)
    featured = f"{ALICE_URI}/featured"
    net.a.cli("pin", ALICE, uri)
    assert [item["id"] for item in net.fetch(featured).json()["orderedItems"]] == [uri]
    until_stored(net.b, "the pin", "SELECT 1 FROM posts WHERE uri = ? AND pinned = 1", uri)
    net.a.cli("pin", ALICE, uri, "--undo")
    assert net.fetch(featured).json()["orderedItems"] == []
    until_stored(net.b, "the unpin", "SELECT 1 FROM posts WHERE uri = ? AND pinned = 0", uri)


# ---------------------------------------------------------------- blocks (last: a block ends follows)


def test_blocked_authors_posts_and_boosts_leave_home(net: Fediverse, morning_post: str) -> None:
    sunset = post(net.c, CAROL, "Sunset over the bay")
    net.a.cli("boost", ALICE, sunset)
    until_boosted(net.b, ALICE_URI, sunset)
    home = timeline(net.b, BOB)
    found(home, sunset, boosted_by=ALICE_URI)
    found(home, morning_post)

    net.b.cli("block", BOB, ALICE)
    home = timeline(net.b, BOB)
    assert [i["uri"] for i in home if ALICE_URI in (i["author"], i["boosted_by"])] == []
    wait_for(lambda: BOB not in followers(net.a, ALICE), what="alice's server drops bob as a follower")
    after = post(net.a, ALICE, "Anyone still here?")
    found(timeline(net.a, ANN), after)
    settle(net)
    assert entry(timeline(net.b, BOB), after) is None
