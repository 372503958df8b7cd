"""Real servers on loopback for federation tests.

* ``tls_ca`` — a trustme CA for the session; ``ca_bundle`` — its certificate as a
  PEM file, for ``Settings.ca_bundle`` / ``SSL_CERT_FILE``;
* ``serve_asgi(app, address="127.0.0.2", port=0, tls_names=("alice.test",))`` —
  serves an ASGI app with uvicorn in a background thread, over https with a
  certificate for ``tls_names`` from ``tls_ca`` (plain http when ``tls_names``
  is empty); returns a `RunningServer` (``resolve_entry("alice.test")`` gives
  the MICROFEDI_RESOLVE entry); every server stops when the test ends;
* ``silent_server(address="127.0.0.1")`` — a TCP listener that accepts and
  never says a word: a peer that hangs, or a tripwire counting connections.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
import uvicorn
from starlette.types import ASGIApp


@dataclass(frozen=True)
class RunningServer:
    """Where a test server listens."""

    scheme: str
    address: str
    port: int

    def resolve_entry(self, name: str) -> str:
        """The MICROFEDI_RESOLVE entry that sends ``name`` to this server."""
        return f"{name}={self.address}:{self.port}"

    def url(self, path: str = "/") -> str:
        """A URL that reaches this server by its address (no name involved)."""
        return f"{self.scheme}://{self.address}:{self.port}{path}"


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """The CA every test server's certificate comes from."""
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_bundle(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tls_ca``'s certificate as a PEM file, for ``ca_bundle`` / SSL_CERT_FILE."""
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return path


def _bound_socket(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    return sock


@pytest.fixture
def serve_asgi(tls_ca: trustme.CA, tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """``serve_asgi(app, address=..., port=0, tls_names=(...))`` starts uvicorn in a thread."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(
        app: ASGIApp, *, address: str = "127.0.0.2", port: int = 0, tls_names: tuple[str, ...] = ()
    ) -> RunningServer:
        # Binding here, not in uvicorn, gives us the port before the thread runs.
        sock = _bound_socket(address, port)
        certificate = None
        if tls_names:
            certificate = tmp_path / f"server-{len(running)}.pem"
            tls_ca.issue_cert(*tls_names).private_key_and_cert_chain_pem.write_to_path(str(certificate))
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            ws="none",
            ssl_certfile=str(certificate) if certificate else None,
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        running.append((server, thread))
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"test server on {address} did not start")
            time.sleep(0.01)
        return RunningServer("https" if tls_names else "http", address, sock.getsockname()[1])

    yield start
    for server, _ in running:
        server.should_exit = True
    for _, thread in running:
        thread.join(timeout=10)


@dataclass
class SilentServer:
    """A listener that accepts connections and never answers."""

    address: str
    port: int
    connections: int = 0

    def resolve_entry(self, name: str) -> str:
        """The MICROFEDI_RESOLVE entry that sends ``name`` here."""
        return f"{name}={self.address}:{self.port}"


@pytest.fixture
def silent_server() -> Iterator[Callable[..., SilentServer]]:
    """``silent_server(address="127.0.0.1")``: a peer that hangs; ``.connections`` counts who came."""
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(address: str = "127.0.0.1") -> SilentServer:
        listener = _bound_socket(address, 0)
        listener.listen(16)
        listener.settimeout(0.05)
        silent = SilentServer(address, listener.getsockname()[1])

        def accept_and_hold() -> None:
            held: list[socket.socket] = []
            with listener:
                while not stop.is_set():
                    try:
                        connection, _ = listener.accept()
                    except TimeoutError:
                        continue
                    silent.connections += 1
                    held.append(connection)
            for connection in held:
                connection.close()

        thread = threading.Thread(target=accept_and_hold, daemon=True)
        thread.start()
        threads.append(thread)
        return silent

    yield start
    stop.set()
    for thread in threads:
        thread.join(timeout=5)
