"""Real microfedi servers in subprocesses, over https on loopback addresses.

Each server listens on its own 127.0.0.x address with a certificate from one
trustme CA for the names it serves; every server gets the same
MICROFEDI_RESOLVE map and SSL_CERT_FILE, so they reach each other by name the
way they would on the internet.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trustme


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """One microfedi install and, while running, its process."""

    name: str
    address: str
    names: tuple[str, ...]
    data_dir: Path
    port: int
    cluster: Cluster
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MICROFEDI_")}
        env.update(
            MICROFEDI_DATA_DIR=str(self.data_dir),
            MICROFEDI_RESOLVE=self.cluster.resolve_map(),
            SSL_CERT_FILE=str(self.cluster.ca_path),
        )
        return env

    def cli(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the microfedi CLI against this install, as an operator would."""
        result = subprocess.run(
            [sys.executable, "-m", "microfedi", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            input=input,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"microfedi {' '.join(args)} failed: {result.stderr}{result.stdout}")
        return result

    def start(self) -> None:
        cert = self.cluster.certificate(self.names)
        certfile, keyfile = self.data_dir.parent / f"{self.name}-cert.pem", self.data_dir.parent / f"{self.name}-key.pem"
        cert.private_key_pem.write_to_path(str(keyfile))
        cert.cert_chain_pems[0].write_to_path(str(certfile))
        self.log_path = self.data_dir.parent / f"{self.name}.log"
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "microfedi", "run", "--host", self.address, "--port", str(self.port),
                "--ssl-certfile", str(certfile), "--ssl-keyfile", str(keyfile),
            ],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited at start:\n{self.log()}")
            try:
                if self.client().get(f"https://{self.names[0]}/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.name} did not start:\n{self.log()}")

    def stop(self) -> None:
        # An idle keep-alive connection would hold uvicorn's graceful shutdown
        # for its full timeout; the client is made again when next needed.
        self.cluster.close_client()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """kill -9: no shutdown, no cleanup."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path and self.log_path.exists() else ""

    def client(self) -> httpx.Client:
        return self.cluster.client()


@dataclass
class Cluster:
    """Several servers that know each other's names."""

    root: Path
    ca: trustme.CA = field(default_factory=trustme.CA)  # pass the suite's `tls_ca` to share it
    servers: list[Server] = field(default_factory=list)
    extra_names: dict[str, tuple[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ca_path = self.root / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_path))
        self._client: httpx.Client | None = None

    def add(self, name: str, address: str, names: tuple[str, ...]) -> Server:
        data_dir = self.root / name / "data"
        data_dir.parent.mkdir(parents=True)
        server = Server(name, address, names, data_dir, free_port(address), self)
        self.servers.append(server)
        server.cli("init")
        return server

    def certificate(self, names: tuple[str, ...]) -> trustme.LeafCert:
        return self.ca.issue_cert(*names)

    def resolve_map(self) -> str:
        pins = [f"{n}={s.address}:{s.port}" for s in self.servers for n in s.names]
        pins += [f"{n}={a}:{p}" for n, (a, p) in self.extra_names.items()]
        return ",".join(pins)

    def client(self) -> httpx.Client:
        """An https client that reaches every name in the cluster, like a remote peer would."""
        if self._client is None:
            pins = {n: (s.address, s.port) for s in self.servers for n in s.names}
            pins.update(self.extra_names)

            class Pinned(httpx.HTTPTransport):
                def handle_request(self, request: httpx.Request) -> httpx.Response:
                    host = request.url.host
                    if host in pins:
                        address, port = pins[host]
                        request.extensions = {**request.extensions, "sni_hostname": host}
                        request.headers["Host"] = host
                        request.url = request.url.copy_with(host=address, port=port)
                    return super().handle_request(request)

            context = ssl.create_default_context(cafile=str(self.ca_path))
            self._client = httpx.Client(transport=Pinned(verify=context), timeout=20)
        return self._client

    def close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        self.close_client()


def wait_for(check, timeout: float = 20.0, interval: float = 0.2, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll `check()` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")
