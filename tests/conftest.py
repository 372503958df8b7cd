"""Fixtures shared by the whole suite: an isolated environment, data dirs, the
database, the CLI, and the ASGI app served in-process with its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from starlette.types import ASGIApp

from microfedi.app import create_app
from microfedi.cli import main
from microfedi.config import Settings
from microfedi.instance import Instance
from microfedi.store.database import Database

# Real servers on loopback (trustme CA, uvicorn in a thread, silent peers),
# shared by the federation and end-to-end tests.
pytest_plugins = ["loopback_fixtures"]


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a developer's MICROFEDI_* settings out of the tests."""
    for name in list(os.environ):
        if name.startswith("MICROFEDI_"):
            monkeypatch.delenv(name)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Where this test's install lives (not created yet: `microfedi init` does that)."""
    return tmp_path / "data"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """An opened database on a fresh file, migrations applied."""
    with Database(tmp_path / "test.sqlite3") as database:
        yield database


def invoke_cli(data_dir: Path, *args: str, input: str | None = None) -> Result:
    """Run `microfedi --data-dir DATA_DIR ARGS...` in-process and return click's Result."""
    return CliRunner().invoke(main, ["--data-dir", str(data_dir), *args], input=input)


@pytest.fixture(scope="session")
def cli_in() -> Callable[..., Result]:
    """`cli_in(data_dir, "user", "list")`: the CLI against any data dir (for wider-scoped fixtures)."""
    return invoke_cli


@pytest.fixture
def cli(data_dir: Path) -> Callable[..., Result]:
    """`cli("domain", "add", "alice.test")` runs the command against this test's data dir."""

    def invoke(*args: str, input: str | None = None) -> Result:
        return invoke_cli(data_dir, *args, input=input)

    return invoke


@contextlib.asynccontextmanager
async def running_lifespan(app: ASGIApp) -> AsyncIterator[None]:
    """Drive the ASGI lifespan protocol around the block, as uvicorn does."""
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    task = asyncio.create_task(app(scope, to_app.get, from_app.put))  # type: ignore[arg-type]
    await to_app.put({"type": "lifespan.startup"})
    started = await from_app.get()
    if started["type"] != "lifespan.startup.complete":
        await task  # re-raises what broke the start-up
        raise RuntimeError(f"lifespan start-up failed: {started.get('message')}")
    try:
        yield
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        stopped = await from_app.get()
        await task
        assert stopped["type"] == "lifespan.shutdown.complete", stopped


@dataclass
class ServedApp:
    """An app running in-process: an httpx client for it, and its open Instance."""

    client: httpx.AsyncClient
    instance: Instance


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Settings], Awaitable[ServedApp]]]:
    """`served = await serve(settings)` starts the app for an install; it stops after the test.

    Requests pick their Host from the URL: `served.client.get("http://alice.test/@alice")`.
    """
    async with contextlib.AsyncExitStack() as stack:

        async def start(settings: Settings) -> ServedApp:
            app = create_app(settings)
            await stack.enter_async_context(running_lifespan(app))
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://unrouted.invalid")
            )
            return ServedApp(client, app.instance)  # type: ignore[attr-defined]

        yield start

