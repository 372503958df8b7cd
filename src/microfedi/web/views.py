"""HTML pages for browsers: host index, profiles, the about page, /health."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from microfedi import __version__
from microfedi.posts import actor_handles
from microfedi.store import posts as pq
from microfedi.store.directory import AccountRow
from microfedi.store.posts import Post
from microfedi.web.responses import directory, host_view


def _render(request: Request, template: str, context: dict[str, object], status: int = 200) -> Response:
    templates = request.app.state.templates
    context = {"host": host_view(request).host, "version": __version__, **context}
    response = templates.TemplateResponse(request, template, context, status_code=status)
    response.headers["Vary"] = "Accept"
    return response


async def profile_page(request: Request, account: AccountRow) -> Response:
    instance = request.app.state.instance
    me = instance.urls.actor(account)
    posts = await instance.db.read(lambda c: pq.author_posts(c, me, ("public",), limit=20))
    pinned = [p for p in await instance.db.read(pq.pinned_posts, me) if p.visibility == "public"]
    return _render(request, "profile.html", {"account": account, "actor_url": me, "posts": posts, "pinned": pinned})


async def post_page(request: Request, account: AccountRow, post: Post) -> Response:
    instance = request.app.state.instance
    thread = await instance.db.read(pq.conversation_posts, post.conversation)
    thread = [p for p in thread if p.visibility in ("public", "unlisted")]
    handles = await actor_handles(instance, [p.author for p in thread])
    return _render(request, "post.html", {"account": account, "post": post, "thread": thread, "handles": handles})


async def tag_page(request: Request) -> Response:
    """Public posts of this host's accounts with a hashtag."""
    instance = request.app.state.instance
    tag = request.path_params["tag"].lower()
    items = await instance.db.read(lambda c: pq.public_page(c, local_only=True, tag=tag, limit=40))
    host = host_view(request).host
    on_host = {uri for uri, account in instance.local_account_uris().items() if host in (account.host, account.domain)}
    posts = [i.post for i in items if i.post.author in on_host]
    handles = await actor_handles(instance, [p.author for p in posts])
    return _render(request, "tag.html", {"tag": tag, "posts": posts, "handles": handles})


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
    Route("/tags/{tag}", tag_page),
]
