"""The Starlette application: routes, Host-based routing, and the lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from microfedi.config import Settings
from microfedi.domains import host_of
from microfedi.errors import ActionError
from microfedi.federation import delivery, inbound_posts, processing, upkeep  # noqa: F401  (declare task kinds)
from microfedi.federation import routes as federation_routes
from microfedi.instance import Instance
from microfedi.tasks.metrics import metrics_endpoint
from microfedi.tasks.runner import Runner
from microfedi.web import views
from microfedi.web.templates import make_templates, templates_dir

log = logging.getLogger("microfedi")

# Paths every host answers, known domain or not (load balancers, monitoring).
HOSTLESS_PATHS = frozenset({"/health", "/metrics"})


class HostRouter:
    """ASGI middleware: route each request by its Host header to a local host.

    The Host is lower-cased with its port stripped; an unknown host gets a 404
    that says so, never another domain's data. The routed HostView and the
    directory snapshot are put in the scope for the views.
    """

    def __init__(self, app: ASGIApp, instance: Instance) -> None:
        self.app = app
        self.instance = instance  # tests and the CLI reach the install through this

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in HOSTLESS_PATHS:
            await self.app(scope, receive, send)
            return
        raw_host = b""
        for name, value in scope["headers"]:
            if name == b"host":
                raw_host = value
                break
        host = host_of(raw_host.decode("latin-1"))
        directory = self.instance.directory.current()
        view = directory.hosts.get(host)
        if view is None:
            reason = f"unknown host {host or '(none)'}: no domain of that name is served here\n"
            await PlainTextResponse(reason, 404)(scope, receive, send)
            return
        scope["microfedi.host"] = view
        scope["microfedi.directory"] = directory
        await self.app(scope, receive, send)


async def _action_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ActionError)
    return PlainTextResponse(str(exc) + "\n", exc.status)


def create_app(settings: Settings) -> ASGIApp:
    """Build the ASGI app for an install; the lifespan opens and closes it."""
    instance = Instance(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await instance.open()
        runner = Runner(instance)
        app.state.runner = instance.runner = runner
        await runner.start()
        log.info("microfedi serving data dir %s", settings.data_dir)
        try:
            yield
        finally:
            await runner.stop(grace=5)
            instance.runner = None
            await instance.close()

    app = Starlette(
        routes=[
            Route("/health", views.health),
            Route("/metrics", metrics_endpoint),
            Mount("/static", StaticFiles(directory=str(templates_dir() / "static")), name="static"),
            *federation_routes.routes,
            *views.routes,
        ],
        lifespan=lifespan,
        exception_handlers={ActionError: _action_error},
    )
    app.state.instance = instance
    app.state.templates = make_templates()
    return HostRouter(app, instance)
