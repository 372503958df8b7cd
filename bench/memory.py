"""Server memory: RSS of `microfedi run` after start and after 1,000 mixed discovery requests.

The requests cycle through DISCOVERY_MIX (WebFinger, actor JSON, host-meta,
NodeInfo, the instance actor, HTML profiles) across several domains, a split
domain among them, over a few kept-alive connections at once. Memory is read
from /proc/PID/status: VmRSS (now) and VmHWM (peak). A bare Starlette app's RSS
after start is measured too, as the floor any Starlette server pays.

    python bench/memory.py            # prints JSON
"""

from __future__ import annotations

import argparse
import http.client
import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import (
    DISCOVERY_MIX,
    GOAL_RSS_MB,
    LOOPBACK,
    ServerProcess,
    check_probes,
    fetch,
    machine_info,
    prepare_data_dir,
    progress,
    run_script,
    start_bare_starlette,
    start_microfedi,
)


def send_mix(server: ServerProcess, total: int, connections: int) -> None:
    """`total` requests of DISCOVERY_MIX, spread over `connections` concurrent kept-alive connections."""

    def one_connection(offset: int) -> None:
        conn = http.client.HTTPConnection(LOOPBACK, server.port, timeout=10)
        try:
            for i in range(offset, total, connections):
                fetch(conn, DISCOVERY_MIX[i % len(DISCOVERY_MIX)])
        finally:
            conn.close()

    with ThreadPoolExecutor(connections) as pool:
        for result in [pool.submit(one_connection, offset) for offset in range(connections)]:
            result.result()  # re-raises a wrong answer


def run(data_dir: Path, work_dir: Path, requests: int = 1000, connections: int = 4) -> dict[str, object]:
    """Measure; `data_dir` must already be prepared (common.prepare_data_dir)."""
    with start_bare_starlette(work_dir) as bare:
        bare_after_start = bare.memory_mb()
    progress(f"memory: microfedi, {requests} mixed discovery requests over {connections} connections")
    with start_microfedi(data_dir, work_dir) as server:
        after_start = server.memory_mb()
        check_probes(server, DISCOVERY_MIX)
        send_mix(server, requests, connections)
        after_requests = server.memory_mb()
    return {
        "requests": requests,
        "connections": connections,
        "request_mix": [probe.describe() for probe in DISCOVERY_MIX],
        "bare_starlette_after_start": bare_after_start,
        "microfedi_after_start": after_start,
        "microfedi_after_requests": after_requests,
        "goal_peak_rss_mb": GOAL_RSS_MB,
        "goal_met": after_requests["peak_rss_mb"] <= GOAL_RSS_MB,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="microfedi-bench-") as tmp:
        work_dir = Path(tmp)
        prepare_data_dir(work_dir / "data")
        result = run(work_dir / "data", work_dir, args.requests, args.connections)
    print(json.dumps({"machine": machine_info(), "memory": result}, indent=2))


if __name__ == "__main__":
    run_script(main)
