"""HTML pages for browsers: host index, profiles, the about page, /health."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from microfedi import __version__
from microfedi.store.directory import AccountRow
from microfedi.web.responses import directory, host_view


def _render(request: Request, template: str, context: dict[str, object], status: int = 200) -> Response:
    templates = request.app.state.templates
    context = {"host": host_view(request).host, "version": __version__, **context}
    response = templates.TemplateResponse(request, template, context, status_code=status)
    response.headers["Vary"] = "Accept"
    return response


def profile_page(request: Request, account: AccountRow) -> Response:
    urls = request.app.state.instance.urls
    return _render(request, "profile.html", {"account": account, "actor_url": urls.actor(account)})


async def index_page(request: Request) -> Response:
    view = host_view(request)
    accounts = sorted(directory(request).accounts_on_host(view.host), key=lambda a: a.handle)
    urls = request.app.state.instance.urls
    people = [(a, urls.actor(a)) for a in accounts if a.discoverable]
    return _render(request, "index.html", {"people": people})


async def about_page(request: Request) -> Response:
    view = host_view(request)
    return _render(request, "about.html", {"domains": [d.domain for d in view.served_domains]})


async def authorize_interaction_page(request: Request) -> Response:
    """Where remote "follow" buttons land (the WebFinger subscribe template)."""
    uri = request.query_params.get("uri", "").strip()
    if not uri:
        return PlainTextResponse("the uri parameter is missing\n", 400)
    return _render(request, "interact.html", {"uri": uri})


async def health(request: Request) -> Response:
    return PlainTextResponse("OK")


routes = [
    Route("/", index_page),
    Route("/about", about_page),
    Route("/authorize_interaction", authorize_interaction_page),
]
