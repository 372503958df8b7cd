"""Inbox ingest: signed activities accepted (202) and fully processed per second.

A remote peer, `peer.sink.test` (fanout.py's loopback peer, pinned to CPU 1,
https with a CA the server trusts through SSL_CERT_FILE), serves its actor and
public key. This process, pinned to CPU 1 too, is the load generator: right
before each round it signs N distinct activities of that actor with fresh Dates
(draft-cavage rsa-sha256 over `(request-target) host date digest`, as Mastodon
signs), then POSTs them to alice.example's shared inbox over several kept-alive
connections. `microfedi run` is pinned to CPU 0.

- accepted/s: N over the time from the first request sent to the last 202;
- processed/s: N over the time from the first request sent to the last `inbox`
  task recorded done in the tasks table (polled read-only).

The activity is `Update` of the peer's own actor (the default): the server
takes it in like any activity (signature, Digest, dedupe row, task), then the
handler validates the embedded actor and rewrites its row — real work, and
what every server sends when a profile changes, yet it needs no further fetch
or delivery. `--activity undo` sends `Undo` of a Follow that does not exist:
the same intake, and a handler whose write changes nothing. Follow activities
would make the server deliver an Accept for each, measuring delivery as well;
activities from N distinct actors would measure N key fetches.

A warm-up activity before the first round lets the server fetch the peer's
key once; the rounds then measure the steady state.

    python bench/inbox_ingest.py                     # prints JSON
    python bench/inbox_ingest.py --activity undo --activities 5000 --connections 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import uvloop
from cryptography.hazmat.primitives.asymmetric import rsa

from common import (
    LOOPBACK,
    BenchError,
    ServerProcess,
    cpu_pinning_note,
    machine_info,
    prepare_data_dir,
    progress,
    run_script,
    start_microfedi,
)
from fanout import (
    AS_CONTEXT,
    LOAD_CPU,
    PY_SPY_HELP,
    SERVER_CPU,
    SINK_DOMAIN,
    TaskTable,
    make_peer_tls,
    on_cpu,
    public_pem,
    py_spy,
    read_only_database,
    server_environment,
    sign_post,
    start_peer,
    wait_for_tasks,
)

GOAL_INGEST_PER_S = 1000.0

INBOX_HOST = "alice.example"  # a self-served domain of common.DOMAINS: its shared inbox
INBOX_PATH = "/inbox"
FOLLOWED = "https://alice.example/@alice"
PEER_HOST = f"peer.{SINK_DOMAIN}"
PEER_ACTOR = f"https://{PEER_HOST}/actor"
UPDATED_NAME = "Peer, update "


def peer_actor(public_key_pem: str) -> dict[str, Any]:
    """The peer's actor document, as the server fetches it and as Updates embed it."""
    return {
        "@context": AS_CONTEXT,
        "id": PEER_ACTOR,
        "type": "Person",
        "preferredUsername": "peer",
        "name": "Peer",
        "inbox": f"{PEER_ACTOR}/inbox",
        "outbox": f"{PEER_ACTOR}/outbox",
        "followers": f"{PEER_ACTOR}/followers",
        "endpoints": {"sharedInbox": f"https://{PEER_HOST}/inbox"},
        "publicKey": {"id": f"{PEER_ACTOR}#main-key", "owner": PEER_ACTOR, "publicKeyPem": public_key_pem},
    }


def update_activity(actor: dict[str, Any], serial: str) -> dict[str, Any]:
    """`Update` of the peer itself, with a new display name (Mastodon's form)."""
    profile = {key: value for key, value in actor.items() if key != "@context"}
    profile["name"] = UPDATED_NAME + serial
    return {
        "@context": AS_CONTEXT,
        "id": f"{PEER_ACTOR}#updates/{serial}",
        "type": "Update",
        "actor": PEER_ACTOR,
        "object": profile,
    }


def undo_activity(actor: dict[str, Any], serial: str) -> dict[str, Any]:
    """`Undo` of a Follow of alice by the peer that never happened."""
    follow = {"id": f"{PEER_ACTOR}#follows/{serial}", "type": "Follow", "actor": PEER_ACTOR, "object": FOLLOWED}
    return {"@context": AS_CONTEXT, "id": f"{follow['id']}/undo", "type": "Undo", "actor": PEER_ACTOR, "object": follow}


ACTIVITIES: dict[str, Callable[[dict[str, Any], str], dict[str, Any]]] = {
    "update": update_activity,
    "undo": undo_activity,
}


def signed_requests(key: rsa.RSAPrivateKey, actor: dict[str, Any], kind: str, serials: list[str]) -> list[bytes]:
    """Raw HTTP/1.1 POSTs of one activity each, signed now."""
    requests = []
    for serial in serials:
        body = json.dumps(ACTIVITIES[kind](actor, serial), separators=(",", ":")).encode()
        headers = sign_post(key, actor["publicKey"]["id"], INBOX_HOST, INBOX_PATH, body)
        head = f"POST {INBOX_PATH} HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        head += f"content-type: application/activity+json\r\ncontent-length: {len(body)}\r\n\r\n"
        requests.append(head.encode() + body)
    return requests


@dataclass
class Sent:
    """The answers to one batch of POSTs and when they started and ended (time.time())."""

    statuses: Counter[int]
    first_sent_at: float
    last_answer_at: float
    refusal: str | None  # the body of the first answer that was not a 202


async def send_all(port: int, requests: list[bytes], connections: int) -> Sent:
    """POST every request over `connections` kept-alive connections, each taking the next one unsent."""
    statuses: Counter[int] = Counter()
    refusals: list[str] = []
    pending = iter(requests)

    async def one_connection() -> None:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        try:
            for request in pending:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                statuses[status] += 1
                if status != 202 and not refusals:
                    refusals.append(f"{status} {body.decode(errors='replace').strip()}")
        finally:
            writer.close()

    started = time.time()
    await asyncio.gather(*(one_connection() for _ in range(connections)))
    return Sent(statuses, started, time.time(), refusals[0] if refusals else None)


@dataclass
class IngestRound:
    """One batch of activities, from the first POST to the last task done."""

    activities: int
    accept_s: float  # first request sent → last 202 received
    process_s: float  # first request sent → last inbox task recorded done
    processed_when_sending_ended: int  # of this round's activities
    server_cpu_s: float  # the server's CPU time (all threads) over process_s, about
    server_cpu_share: float
    load_cpu_share: float  # this process (CPU 1): near 1.0 would mean the load generator set the pace

    @property
    def accepted_per_s(self) -> float:
        return self.activities / self.accept_s

    @property
    def processed_per_s(self) -> float:
        return self.activities / self.process_s

    def as_json(self) -> dict[str, object]:
        return {
            **asdict(self),
            "accepted_per_s": round(self.accepted_per_s, 1),
            "processed_per_s": round(self.processed_per_s, 1),
            "processed_per_server_cpu_s": round(self.activities / self.server_cpu_s, 1),
        }


def ingest_round(
    server: ServerProcess,
    table: TaskTable,
    requests: list[bytes],
    finished_before: int,
    connections: int,
    timeout: float,
) -> IngestRound:
    """Send `requests`, then wait until their inbox tasks are done; raise BenchError on any refusal."""
    cpu_before, load_cpu_before = server.cpu_seconds(), time.process_time()
    sent = uvloop.run(send_all(server.port, requests, connections))
    processed_then = table.progress("inbox").finished - finished_before
    if sent.statuses != Counter({202: len(requests)}):
        raise BenchError(f"the inbox answered {dict(sent.statuses)}; first refusal: {sent.refusal}")
    done = wait_for_tasks(table, "inbox", finished_before + len(requests), timeout)
    wall = time.time() - sent.first_sent_at
    cpu = server.cpu_seconds() - cpu_before
    if done.by_state.get("dead"):
        raise BenchError(f"{done.by_state['dead']} inbox tasks are dead: {table.errors('inbox')}")
    assert done.last_finished_at is not None
    return IngestRound(
        activities=len(requests),
        accept_s=round(sent.last_answer_at - sent.first_sent_at, 3),
        process_s=round(done.last_finished_at - sent.first_sent_at, 3),
        processed_when_sending_ended=processed_then,
        server_cpu_s=round(cpu, 3),
        server_cpu_share=round(cpu / wall, 2),
        load_cpu_share=round((time.process_time() - load_cpu_before) / wall, 2),
    )


def peer_name(data_dir: Path) -> str | None:
    """The display name the server holds for the peer (Updates change it)."""
    conn = read_only_database(data_dir)
    try:
        row = conn.execute("SELECT name FROM remote_actors WHERE uri = ?", (PEER_ACTOR,)).fetchone()
    finally:
        conn.close()
    return row[0] if row else None


def run(
    work_dir: Path,
    activities: int = 5000,
    kind: str = "update",
    connections: int = 16,
    rounds: int = 3,
    timeout: float = 60.0,
    profile: Path | None = None,
) -> dict[str, object]:
    """Measure `rounds` batches of `activities` signed activities of `kind` against a fresh install.

    The best round (by processed/s) is the result: noise on the machine only
    slows a round down. `profile` samples the last round's server with py-spy.
    """
    data_dir = work_dir / "ingest-data"
    progress(f"inbox ingest: preparing an install; the peer signs {kind} activities")
    prepare_data_dir(data_dir)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    actor = peer_actor(public_pem(key))
    tls = make_peer_tls(work_dir)
    peer = start_peer(work_dir, tls, documents={"/actor": actor})
    ingests: list[IngestRound] = []
    with peer.process:
        server = start_microfedi(data_dir, work_dir, cpu=SERVER_CPU)
        server.env = server_environment(data_dir, tls, peer.resolve_entries([PEER_HOST]))
        with server, on_cpu(LOAD_CPU):
            table = TaskTable(data_dir)
            try:
                warm_up = ingest_round(server, table, signed_requests(key, actor, kind, ["warm-up"]), 0, 1, timeout)
                if peer.stats()["gets"] == 0:
                    raise BenchError("the server accepted the warm-up without fetching the peer's key")
                for number in range(1, rounds + 1):
                    progress(f"inbox ingest: round {number}/{rounds}, signing {activities} activities")
                    serials = [f"{number}-{i}" for i in range(activities)]
                    requests = signed_requests(key, actor, kind, serials)
                    finished = table.progress("inbox").finished
                    progress(f"inbox ingest: round {number}/{rounds}, sending over {connections} connections")
                    with py_spy(server.pid, profile if number == rounds else None):
                        ingests.append(ingest_round(server, table, requests, finished, connections, timeout))
            finally:
                table.close()
            memory = server.memory_mb()
    if kind == "update" and not (peer_name(data_dir) or "").startswith(UPDATED_NAME):
        raise BenchError(f"the Updates were accepted but the peer's name is {peer_name(data_dir)!r}")

    best = max(ingests, key=lambda r: r.processed_per_s)
    result: dict[str, object] = {
        "activity": kind,
        "activities_per_round": activities,
        "connections": connections,
        "peer_scheme": "https",
        "cpu_pinning": cpu_pinning_note(),
        "warm_up_s": warm_up.process_s,
        "rounds": [r.as_json() for r in ingests],
        "accepted_per_s": round(max(r.accepted_per_s for r in ingests), 1),
        "processed_per_s": round(best.processed_per_s, 1),
        "goal_per_s": GOAL_INGEST_PER_S,
        "server_memory_after": memory,
        "goal_met": best.processed_per_s >= GOAL_INGEST_PER_S,
    }
    if best.server_cpu_share < 0.9:
        result["warning"] = (
            f"the server had only {best.server_cpu_share:.0%} of its core in the best round "
            "(other work on the machine, or waiting)"
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activities", type=int, default=5000, help="signed activities per round")
    parser.add_argument("--activity", choices=sorted(ACTIVITIES), default="update")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--py-spy", type=Path, metavar="FILE", help=PY_SPY_HELP)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="microfedi-bench-") as tmp:
        result = run(Path(tmp), args.activities, args.activity, args.connections, args.rounds, profile=args.py_spy)
    print(json.dumps({"machine": machine_info(), "inbox_ingest": result}, indent=2))


if __name__ == "__main__":
    run_script(main)
