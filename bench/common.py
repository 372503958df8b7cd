"""What the benchmarks share: the machine, a prepared data dir, server processes, requests.

Every benchmark starts real processes on loopback: `microfedi run` from the
installed console script, and for comparison a bare Starlette app under the same
uvicorn settings (bare_starlette.py). Nothing here imports microfedi, so the
numbers are those of the installed product, not of code loaded into this process.
"""

from __future__ import annotations

import datetime
import http.client
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
LOOPBACK = "127.0.0.1"

# The goals of issue 2, in one place so every script and RESULTS.md agree.
GOAL_RSS_MB = 60.0
GOAL_THROUGHPUT_RATIO = 0.5
GOAL_COLD_START_S = 0.3

# Handle domains and their service domain (None: the domain serves itself).
# bob.example and dave.example are split domains sharing fedi.example, the
# set-up where one URL host answers for several handle domains.
DOMAINS: dict[str, str | None] = {
    "alice.example": None,
    "carol.example": None,
    "bob.example": "fedi.example",
    "dave.example": "fedi.example",
}
USERS = ("alice@alice.example", "ann@alice.example", "carol@carol.example", "bob@bob.example", "dave@dave.example")
BENCH_PASSWORD = "bench-password-not-secret"

ACTIVITY_JSON = "application/activity+json"
HTML = "text/html"


@dataclass(frozen=True)
class Probe:
    """One request of a benchmark mix and what a correct answer looks like."""

    host: str
    path: str
    accept: str = "*/*"
    content_type: str = "json"  # a substring the Content-Type must contain

    def describe(self) -> str:
        return f"{self.host}{self.path} (Accept: {self.accept})"


def webfinger(host: str, handle: str) -> Probe:
    return Probe(host, f"/.well-known/webfinger?resource=acct:{handle}", content_type="application/jrd+json")


def actor(host: str, username: str) -> Probe:
    return Probe(host, f"/@{username}", ACTIVITY_JSON, content_type=ACTIVITY_JSON)


# The hot path of federation: WebFinger and actor GETs, alternating, across a
# self-served domain, both sides of a split domain's round trip, and a second
# self-served domain.
HOT_PATH = (
    webfinger("alice.example", "alice@alice.example"),
    actor("alice.example", "alice"),
    webfinger("bob.example", "bob@bob.example"),
    actor("fedi.example", "bob"),
    webfinger("fedi.example", "bob@fedi.example"),
    actor("carol.example", "carol"),
)

# Everything a remote server or a browser asks when it discovers an account.
DISCOVERY_MIX = (
    *HOT_PATH,
    webfinger("dave.example", "dave@dave.example"),
    Probe("alice.example", "/@ann", 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"', ACTIVITY_JSON),
    Probe("bob.example", "/.well-known/host-meta", content_type="application/xrd+xml"),
    Probe("carol.example", "/.well-known/host-meta.json", content_type="json"),
    Probe("carol.example", "/.well-known/nodeinfo", content_type="json"),
    Probe("alice.example", "/nodeinfo/2.0", content_type="json"),
    Probe("fedi.example", "/nodeinfo/2.1", content_type="json"),
    Probe("alice.example", "/actor", ACTIVITY_JSON, ACTIVITY_JSON),
    Probe("carol.example", "/@carol", HTML, HTML),
    Probe("fedi.example", "/@dave", HTML, HTML),
)


class BenchError(Exception):
    """The benchmark cannot run or measured something wrong; the message says what."""


def run_script(main: Callable[[], None]) -> None:
    """Run a benchmark's `main`, turning BenchError into one line on stderr and exit status 1."""
    try:
        main()
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


def machine_info() -> dict[str, object]:
    """The facts RESULTS.md records next to every figure."""
    cpu_model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        # Other work on the machine lowers every figure; the ratios less so.
        "load_average_1min": round(os.getloadavg()[0], 2),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def code_under_test() -> dict[str, str]:
    """Which microfedi was measured: the installed package, and this repo's git revision."""
    package = subprocess.run(
        [sys.executable, "-c", "import microfedi; print(microfedi.__version__, microfedi.__file__)"],
        capture_output=True, text=True,
    ).stdout.strip()
    revision = subprocess.run(
        ["git", "-C", str(BENCH_DIR), "describe", "--always", "--dirty"], capture_output=True, text=True
    ).stdout.strip()
    return {"installed_package": package or "not importable", "repo_revision": revision or "unknown"}


def console_script(name: str = "microfedi") -> Path:
    """The installed console script itself.

    Prefer the one next to this interpreter over PATH: a version manager's shim
    (pyenv) on PATH would add its own start-up time to every measurement.
    """
    beside = Path(sysconfig.get_path("scripts")) / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    if found is None:
        raise BenchError(f"the `{name}` console script is not installed; run `pip install -e .` in the repo first")
    return Path(found)


def progress(message: str) -> None:
    """Progress goes to stderr; stdout carries only the JSON result."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def pinned(command: list[str], cpu: int) -> list[str]:
    """`command` pinned to one CPU with taskset, when there is more than one CPU to share."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > cpu:
        return ["taskset", "--cpu-list", str(cpu), *command]
    return command


def cpu_pinning_note() -> str:
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return "server on CPU 0, load generator on CPU 1 (taskset)"
    return "not pinned (taskset missing or one CPU): server and load generator share the CPUs"


def microfedi_env(data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["MICROFEDI_DATA_DIR"] = str(data_dir)
    return env


def prepare_data_dir(data_dir: Path) -> None:
    """A data dir with DOMAINS and USERS, made with the CLI exactly as an operator would."""
    script = str(console_script())
    env = microfedi_env(data_dir)

    def cli(*args: str, stdin: str | None = None) -> None:
        done = subprocess.run([script, *args], env=env, input=stdin, capture_output=True, text=True)
        if done.returncode != 0:
            raise BenchError(f"`microfedi {' '.join(args)}` failed: {done.stderr.strip() or done.stdout.strip()}")

    cli("init")
    for domain, service_domain in DOMAINS.items():
        cli("domain", "add", domain, *(["--service-domain", service_domain] if service_domain else []))
    for handle in USERS:
        cli("user", "add", handle, "--password-stdin", stdin=BENCH_PASSWORD + "\n")


def _memory_kib(pid: int) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


class ServerProcess:
    """A server started as a subprocess on loopback, stopped on exit from `with`."""

    def __init__(self, name: str, command: list[str], port: int, env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.command = command
        self.port = port
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self._wait_until_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-15:])
        except OSError:
            return "(no log)"

    def _wait_until_ready(self, timeout: float = 20.0) -> None:
        # /health answers on every host, so it tells "listening" apart from "routing works".
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.process.returncode} before listening:\n{self._log_tail()}")
            try:
                conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=1)
                conn.request("GET", "/health", headers={"Host": "localhost"})
                if conn.getresponse().status == 200:
                    conn.close()
                    return
                conn.close()
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise BenchError(f"{self.name} did not answer /health within {timeout:.0f} s:\n{self._log_tail()}")

    def memory_mb(self) -> dict[str, float]:
        """Resident set now (VmRSS) and its peak so far (VmHWM), in MB (10^6 bytes)."""
        kib = _memory_kib(self.pid)
        return {"rss_mb": round(kib["VmRSS"] * 1024 / 1e6, 1), "peak_rss_mb": round(kib["VmHWM"] * 1024 / 1e6, 1)}

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server so far, all its threads included."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # After the ")" that closes the command name, utime and stime are fields 12 and 13.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_microfedi(data_dir: Path, work_dir: Path, cpu: int = 0) -> ServerProcess:
    """`microfedi run --port P` on the data dir, pinned to `cpu`; use it with `with`."""
    port = free_port()
    command = pinned([str(console_script()), "run", "--port", str(port)], cpu)
    return ServerProcess("microfedi", command, port, microfedi_env(data_dir), work_dir / "microfedi.log")


def start_bare_starlette(work_dir: Path, cpu: int = 0) -> ServerProcess:
    """The bare Starlette app (bare_starlette.py) under microfedi's uvicorn settings."""
    port = free_port()
    command = pinned([sys.executable, str(BENCH_DIR / "bare_starlette.py"), "--port", str(port)], cpu)
    return ServerProcess("bare Starlette", command, port, dict(os.environ), work_dir / "bare_starlette.log")


def fetch(conn: http.client.HTTPConnection, probe: Probe) -> bytes:
    """GET `probe` on a kept-alive connection; raise BenchError unless it is a 200 of the right type."""
    conn.request("GET", probe.path, headers={"Host": probe.host, "Accept": probe.accept})
    response = conn.getresponse()
    body = response.read()
    content_type = response.getheader("Content-Type", "")
    if response.status != 200 or probe.content_type not in content_type:
        raise BenchError(
            f"{probe.describe()} answered {response.status} {content_type!r}, "
            f"expected 200 {probe.content_type!r}: {body[:200]!r}"
        )
    return body


def check_probes(server: ServerProcess, probes: tuple[Probe, ...]) -> None:
    """Fetch each probe once, so a benchmark never times error pages."""
    conn = http.client.HTTPConnection(LOOPBACK, server.port, timeout=10)
    try:
        for probe in probes:
            fetch(conn, probe)
    finally:
        conn.close()
