"""Two microfedi servers over https on loopback follow each other.

Server A (127.0.0.2) hosts alice.test. Server B (127.0.0.3) hosts bob.test and
fedi.test, and carol.test as a split domain: carol.test itself is a separate
web server (127.0.0.4) that only redirects the three .well-known paths to
fedi.test, so @carol@carol.test has her actor at https://fedi.test/@carol.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.routing import Route

from servers import Cluster, Server, wait_for

WELL_KNOWN = ("webfinger", "host-meta", "nodeinfo")


def handle_domain_app() -> Starlette:
    """carol.test's own web host: a static site that redirects only .well-known."""

    async def redirect(request):  # type: ignore[no-untyped-def]
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(f"https://fedi.test{request.url.path}{query}", status_code=301)

    async def blog(request):  # type: ignore[no-untyped-def]
        return PlainTextResponse("carol's blog")

    routes = [Route(f"/.well-known/{name}", redirect) for name in WELL_KNOWN]
    return Starlette(routes=[*routes, Route("/", blog)])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Server, Server]]:
    ca = trustme.CA()
    cluster = Cluster(tmp_path_factory.mktemp("federation"), ca=ca)
    a = cluster.add("a", "127.0.0.2", ("alice.test",))
    b = cluster.add("b", "127.0.0.3", ("bob.test", "fedi.test"))
    a.cli("domain", "add", "alice.test")
    a.cli("user", "add", "alice@alice.test")
    b.cli("domain", "add", "bob.test")
    b.cli("domain", "add", "fedi.test")
    b.cli("domain", "add", "carol.test", "--service-domain", "fedi.test")
    b.cli("user", "add", "bob@bob.test")
    b.cli("user", "add", "carol@carol.test")
    b.cli("user", "add", "dave@fedi.test")
    b.cli("profile", "dave@fedi.test", "--locked")
    carol_site = _serve_in_thread(handle_domain_app(), "127.0.0.4", ca, "carol.test")
    cluster.extra_names["carol.test"] = ("127.0.0.4", carol_site.port)
    try:
        a.start()
        b.start()
        yield cluster, a, b
    finally:
        cluster.stop()
        carol_site.stop()


class _ThreadServer:
    def __init__(self, server, thread, port: int) -> None:  # type: ignore[no-untyped-def]
        self.server, self.thread, self.port = server, thread, port

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _serve_in_thread(app: Starlette, address: str, ca: trustme.CA, name: str) -> _ThreadServer:
    """A module-scoped server (the suite's serve_asgi fixture is per test)."""
    import socket
    import tempfile
    import threading
    import time

    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, 0))
    pem = Path(tempfile.mkdtemp()) / "cert.pem"
    ca.issue_cert(name).private_key_and_cert_chain_pem.write_to_path(str(pem))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ssl_certfile=str(pem)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "carol.test did not start"
        time.sleep(0.01)
    return _ThreadServer(server, thread, sock.getsockname()[1])


def relationships(server: Server, command: str, handle: str) -> dict[str, list[str]]:
    data = json.loads(server.cli(command, handle, "--json").stdout)
    return {state: sorted(entry["handle"] for entry in entries) for state, entries in data.items()}


def eventually(check: Callable[[], object], what: str) -> None:
    wait_for(check, timeout=20, what=what)


def add_user(server: Server, handle: str) -> None:
    """`microfedi user add`, then wait until the running server answers for the account.

    A running server notices accounts added by the CLI within a fraction of a
    second; a peer asking at once could be told the account does not exist.
    """
    server.cli("user", "add", handle)
    host = handle.split("@")[1]
    client = server.client()
    eventually(
        lambda: client.get(f"https://{host}/.well-known/webfinger?resource=acct:{handle}").status_code == 200,
        f"{handle} is served",
    )


def test_split_domain_webfinger_round_trip_from_outside(cluster: tuple[Cluster, Server, Server]) -> None:
    network, _, _ = cluster
    client = network.client()
    first = client.get("https://carol.test/.well-known/webfinger?resource=acct:carol@carol.test")
    assert first.status_code == 301
    jrd = client.get(first.headers["location"]).json()
    assert jrd["subject"] == "acct:carol@carol.test"
    self_link = next(link["href"] for link in jrd["links"] if link["rel"] == "self")
    assert self_link == "https://fedi.test/@carol"
    # Mastodon's second leg: preferredUsername@URL-host asked at the URL host.
    again = client.get("https://fedi.test/.well-known/webfinger?resource=acct:carol@fedi.test").json()
    assert again["subject"] == "acct:carol@carol.test"
    assert next(link["href"] for link in again["links"] if link["rel"] == "self") == self_link


def test_follow_each_other(cluster: tuple[Cluster, Server, Server]) -> None:
    _, a, b = cluster
    assert "follow request sent" in a.cli("follow", "alice@alice.test", "bob@bob.test").stdout
    b.cli("follow", "bob@bob.test", "@alice@alice.test")
    eventually(lambda: relationships(a, "following", "alice@alice.test")["accepted"] == ["bob@bob.test"], "A sees B accept")
    eventually(lambda: relationships(b, "following", "bob@bob.test")["accepted"] == ["alice@alice.test"], "B sees A accept")
    assert relationships(a, "followers", "alice@alice.test")["accepted"] == ["bob@bob.test"]
    assert relationships(b, "followers", "bob@bob.test")["accepted"] == ["alice@alice.test"]
    # The collections other servers read say the same, with correct totals.
    client = a.client()
    followers = client.get("https://bob.test/@bob/followers", headers={"Accept": "application/activity+json"}).json()
    assert followers["totalItems"] == 1
    page = client.get(followers["first"], headers={"Accept": "application/activity+json"}).json()
    assert page["type"] == "OrderedCollectionPage" and page["orderedItems"] == ["https://alice.test/@alice"]


def test_follow_split_domain_account_both_ways(cluster: tuple[Cluster, Server, Server]) -> None:
    _, a, b = cluster
    out = a.cli("follow", "alice@alice.test", "carol@carol.test").stdout
    assert "https://fedi.test/@carol" in out
    b.cli("follow", "carol@carol.test", "alice@alice.test")
    eventually(
        lambda: "carol@carol.test" in relationships(a, "following", "alice@alice.test")["accepted"],
        "alice's follow of carol accepted",
    )
    eventually(
        lambda: relationships(b, "following", "carol@carol.test")["accepted"] == ["alice@alice.test"],
        "carol's follow of alice accepted",
    )
    # A shows carol by her handle on carol.test, not by the URL host.
    assert "carol@carol.test" in relationships(a, "followers", "alice@alice.test")["accepted"]


def test_locked_account_holds_follow_until_approved(cluster: tuple[Cluster, Server, Server]) -> None:
    _, a, b = cluster
    a.cli("follow", "alice@alice.test", "dave@fedi.test")
    eventually(lambda: relationships(b, "followers", "dave@fedi.test")["pending"] == ["alice@alice.test"], "request held")
    assert relationships(a, "following", "alice@alice.test")["pending"] == ["dave@fedi.test"]
    b.cli("approve", "dave@fedi.test", "alice@alice.test")
    eventually(
        lambda: "dave@fedi.test" in relationships(a, "following", "alice@alice.test")["accepted"], "approval arrives"
    )


def test_unfollow_and_block(cluster: tuple[Cluster, Server, Server]) -> None:
    _, a, b = cluster
    a.cli("follow", "alice@alice.test", "bob@bob.test")
    eventually(lambda: "bob@bob.test" in relationships(a, "following", "alice@alice.test")["accepted"], "following bob")
    a.cli("unfollow", "alice@alice.test", "bob@bob.test")
    eventually(
        lambda: "alice@alice.test" not in relationships(b, "followers", "bob@bob.test")["accepted"], "Undo reaches B"
    )
    # bob blocks alice: the follow alice -> bob is gone on both sides, and a new one is refused.
    b.cli("follow", "bob@bob.test", "alice@alice.test")
    b.cli("block", "bob@bob.test", "alice@alice.test")
    eventually(
        lambda: "bob@bob.test" not in relationships(a, "followers", "alice@alice.test")["accepted"], "Block reaches A"
    )
    a.cli("follow", "alice@alice.test", "bob@bob.test")
    eventually(
        lambda: "bob@bob.test" not in sum(relationships(a, "following", "alice@alice.test").values(), []),
        "B rejects a blocked follower",
    )


def test_unknown_remote_account_is_a_clear_error(cluster: tuple[Cluster, Server, Server]) -> None:
    _, a, _ = cluster
    result = a.cli("follow", "alice@alice.test", "nobody@bob.test", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot find nobody@bob.test")
    assert "Traceback" not in result.stderr


def remote_actor_row(server: Server, uri: str) -> dict[str, object] | None:
    import sqlite3

    with sqlite3.connect(f"file:{server.data_dir / 'microfedi.sqlite3'}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM remote_actors WHERE uri = ?", (uri,)).fetchone()
    return dict(row) if row else None


def test_profile_edit_reaches_followers(cluster: tuple[Cluster, Server, Server]) -> None:
    _, a, b = cluster
    b.cli("follow", "bob@bob.test", "alice@alice.test")
    eventually(lambda: "alice@alice.test" in relationships(b, "following", "bob@bob.test")["accepted"], "bob follows alice")
    a.cli("profile", "alice@alice.test", "--name", "Alice Liddell", "--bio", "Down the #rabbithole", "--field", "Home=https://alice.test")
    eventually(
        lambda: (remote_actor_row(b, "https://alice.test/@alice") or {}).get("name") == "Alice Liddell",
        "the Update of alice reaches B",
    )
    row = remote_actor_row(b, "https://alice.test/@alice")
    assert row is not None and "rabbithole" in str(row["summary"])
    actor = a.client().get("https://alice.test/@alice", headers={"Accept": "application/activity+json"}).json()
    assert actor["attachment"] == [{"type": "PropertyValue", "name": "Home", "value": "https://alice.test"}]


def test_move_to_another_server_moves_followers(cluster: tuple[Cluster, Server, Server]) -> None:
    _, a, b = cluster
    add_user(a, "mover@alice.test")
    add_user(b, "mover@bob.test")
    b.cli("follow", "bob@bob.test", "mover@alice.test")
    eventually(lambda: "mover@alice.test" in relationships(b, "following", "bob@bob.test")["accepted"], "bob follows mover")
    refused = a.cli("move", "mover@alice.test", "mover@bob.test", check=False)
    assert refused.returncode == 1 and "alsoKnownAs" in refused.stderr
    b.cli("alias", "mover@bob.test", "mover@alice.test")
    a.cli("move", "mover@alice.test", "mover@bob.test")
    eventually(
        lambda: "mover@bob.test" in relationships(b, "following", "bob@bob.test")["accepted"]
        and "mover@alice.test" not in sum(relationships(b, "following", "bob@bob.test").values(), []),
        "bob now follows the new account instead",
    )
    notes = json.loads(b.cli("notifications", "bob@bob.test", "--json").stdout)
    assert any(n["type"] == "move" and n["actor"] == "https://alice.test/@mover" for n in notes)
    actor = a.client().get("https://alice.test/@mover", headers={"Accept": "application/activity+json"}).json()
    assert actor["movedTo"] == "https://bob.test/@mover"


def test_removing_a_user_tells_followers_servers(cluster: tuple[Cluster, Server, Server]) -> None:
    _, a, b = cluster
    add_user(a, "leaving@alice.test")
    b.cli("follow", "bob@bob.test", "leaving@alice.test")
    eventually(lambda: "leaving@alice.test" in relationships(b, "following", "bob@bob.test")["accepted"], "bob follows")
    a.cli("post", "leaving@alice.test", "goodbye, world")
    eventually(lambda: "goodbye" in b.cli("timeline", "bob@bob.test").stdout, "the post arrives")
    a.cli("user", "remove", "leaving@alice.test", "--yes")
    eventually(
        lambda: (remote_actor_row(b, "https://alice.test/@leaving") or {}).get("deleted_at") is not None,
        "B hears of the Delete",
    )
    assert "leaving@alice.test" not in sum(relationships(b, "following", "bob@bob.test").values(), [])
    assert "goodbye" not in b.cli("timeline", "bob@bob.test").stdout
    gone = a.client().get("https://alice.test/@leaving", headers={"Accept": "application/activity+json"})
    assert gone.status_code == 410
