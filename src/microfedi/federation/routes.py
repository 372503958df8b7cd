"""HTTP endpoints for discovery (WebFinger, host-meta, NodeInfo) and actor documents.

Views are thin: they read the routed host and the directory snapshot, call the
document builders, and cache the rendered bytes in the directory cache (emptied
whenever domains or accounts change).
"""

from __future__ import annotations

from html import escape
from typing import Any, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from microfedi.errors import ActionError
from microfedi.federation import actors, nodeinfo, notes, webfinger
from microfedi.federation.inbox import inbox_endpoint
from microfedi.store import federation as fq
from microfedi.store import posts as pq
from microfedi.store.directory import AccountRow
from microfedi.store.posts import Post
from microfedi.instance import Instance
from microfedi.web.views import post_page, profile_page
from microfedi.web.responses import (
    activity_response,
    directory,
    dump_json,
    error,
    host_view,
    json_response,
    wants_activity_json,
)


def _instance(request: Request) -> Instance:
    return request.app.state.instance


def _cached(request: Request, key: tuple[object, ...], build: Callable[[], Any]) -> bytes:
    cache = _instance(request).directory.derived
    body = cache.get(key)
    if body is None:
        body = dump_json(build())
        cache[key] = body
    return body  # type: ignore[return-value]


async def webfinger_view(request: Request) -> Response:
    instance = _instance(request)
    host = host_view(request).host
    raw = request.query_params.get("resource")
    rels = request.query_params.getlist("rel")
    try:
        resource = webfinger.parse_resource(raw)
    except ActionError as exc:
        return error(400, str(exc))
    subject = webfinger.find_subject(directory(request), resource, host)
    if subject is None:
        return error(404, f"no account {raw} is known at {host}")
    if rels:  # rare, and arbitrary: not worth caching
        body = dump_json(webfinger.jrd(subject, instance.urls, rels))
    else:
        who = subject.account.id if subject.account else subject.instance_host
        body = _cached(request, ("jrd", host, who), lambda: webfinger.jrd(subject, instance.urls))
    return json_response(body, "application/jrd+json", cors=True)


async def host_meta_view(request: Request) -> Response:
    template = escape(_instance(request).urls.webfinger_template(host_view(request).host), quote=True)
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<XRD xmlns="http://docs.oasis-open.org/ns/xri/xrd-1.0">\n'
        f'  <Link rel="lrdd" template="{template}"/>\n'
        "</XRD>\n"
    )
    return Response(xml, media_type="application/xrd+xml", headers={"Access-Control-Allow-Origin": "*"})


async def host_meta_json_view(request: Request) -> Response:
    template = _instance(request).urls.webfinger_template(host_view(request).host)
    return json_response(dump_json({"links": [{"rel": "lrdd", "template": template}]}), cors=True)


async def nodeinfo_index_view(request: Request) -> Response:
    host = host_view(request).host
    body = _cached(request, ("nodeinfo-index", host), lambda: nodeinfo.well_known(host, directory(request), _instance(request).urls))
    return json_response(body, cors=True)


async def nodeinfo_view(request: Request) -> Response:
    version = request.path_params["version"]
    if version not in nodeinfo.VERSIONS:
        return error(404, f"no NodeInfo {version}; this server has {', '.join(nodeinfo.VERSIONS)}")
    host = host_view(request).host
    snapshot = directory(request)
    accounts = [a.id for a in snapshot.accounts_on_host(host)]
    local_posts = await _instance(request).db.read(pq.count_local_posts, accounts)
    doc = nodeinfo.document(version, host, snapshot, _instance(request).urls, local_posts)
    media_type = f'application/json; profile="{nodeinfo.SCHEMA.format(version=version)}#"'
    return json_response(dump_json(doc), media_type, cors=True)


async def instance_actor_view(request: Request) -> Response:
    host = host_view(request).host
    key = directory(request).instance_keys.get(host)
    if key is None or not host_view(request).serves_actors:
        return error(404, f"{host} serves no actors")
    body = _cached(request, ("instance-actor", host), lambda: actors.instance_actor(host, key, _instance(request).urls))
    return activity_response(body)


def _local_account(request: Request):
    """(account, None) for /@username on this host, or (None, error response)."""
    host = host_view(request).host
    username = request.path_params["username"].lower()
    snapshot = directory(request)
    account = snapshot.accounts_by_url.get((host, username))
    if account is not None:
        return account, None
    removed = snapshot.removed_by_url.get((host, username))
    if removed is not None:
        body = dump_json(actors.gone_actor(removed, _instance(request).urls))
        return None, activity_response(body, 410)
    return None, error(404, f"no account @{username} on {host}")


async def actor_view(request: Request) -> Response:
    account, failure = _local_account(request)
    if failure is not None:
        return failure
    if not wants_activity_json(request):
        return await profile_page(request, account)
    body = _cached(request, ("actor", account.id), lambda: actors.local_actor(account, _instance(request).urls))
    return activity_response(body)


PAGE_SIZE = 40


def _follow_collection_view(side: str) -> Callable[[Request], Any]:
    """followers / following: a paged OrderedCollection of accepted actor URIs."""

    async def view(request: Request) -> Response:
        account, failure = _local_account(request)
        if failure is not None:
            return failure
        instance = _instance(request)
        me = instance.urls.actor(account)
        collection_id = getattr(instance.urls, side)(account)
        mine = {"followee": me} if side == "followers" else {"follower": me}
        total = await instance.db.read(lambda conn: fq.count_follows(conn, **mine))
        raw_page = request.query_params.get("page")
        if raw_page is None:
            return activity_response(dump_json(actors.paged_collection(collection_id, total)))
        if not raw_page.isdigit() or int(raw_page) < 1:
            return error(400, "page must be a whole number from 1")
        page = int(raw_page)
        rows = await instance.db.read(
            lambda conn: fq.list_follows(
                conn, state="accepted", limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE, **mine
            )
        )
        items = [row.follower if side == "followers" else row.followee for row in rows[:PAGE_SIZE]]
        doc = actors.collection_page(collection_id, page, items, total, len(rows) > PAGE_SIZE)
        return activity_response(dump_json(doc))

    view.__name__ = f"{side}_view"
    return view


def _note_renderer(request: Request, account: AccountRow) -> Callable[[Post], dict[str, Any]]:
    urls = _instance(request).urls
    followers = urls.followers(account)
    origin = urls.origin(account.host)
    return lambda post: notes.note_document(post, followers, lambda tag: f"{origin}/tags/{tag}")


async def outbox_view(request: Request) -> Response:
    """The outbox: Create activities of public and unlisted posts, paged by id."""
    account, failure = _local_account(request)
    if failure is not None:
        return failure
    instance = _instance(request)
    me = instance.urls.actor(account)
    outbox = instance.urls.outbox(account)
    shown = ("public", "unlisted")
    total = await instance.db.read(pq.count_author_posts, me, shown)
    if "page" not in request.query_params:
        return activity_response(dump_json(actors.paged_collection(outbox, total, f"{outbox}?page=true")))
    raw_max = request.query_params.get("max_id")
    if raw_max is not None and not raw_max.isdigit():
        return error(400, "max_id must be a post id")
    max_id = int(raw_max) if raw_max else None
    posts = await instance.db.read(lambda c: pq.author_posts(c, me, shown, limit=PAGE_SIZE, max_id=max_id))
    render = _note_renderer(request, account)
    items = [notes.wrap_activity("Create", p, render(p), f"{p.uri}/activity") for p in posts]
    for item in items:
        item.pop("@context")
    page_id = f"{outbox}?page=true" + (f"&max_id={max_id}" if max_id else "")
    doc = actors.cursor_page(page_id, outbox, items, f"{outbox}?page=true&max_id={posts[-1].id}" if len(posts) == PAGE_SIZE else None)
    return activity_response(dump_json(doc))


async def featured_view(request: Request) -> Response:
    """Pinned posts (the `featured` collection Mastodon reads)."""
    account, failure = _local_account(request)
    if failure is not None:
        return failure
    instance = _instance(request)
    pinned = await instance.db.read(pq.pinned_posts, instance.urls.actor(account))
    render = _note_renderer(request, account)
    items = [{k: v for k, v in render(p).items() if k != "@context"} for p in pinned if p.visibility in ("public", "unlisted")]
    return activity_response(dump_json(actors.ordered_collection(instance.urls.featured(account), items)))


async def _local_post(request: Request) -> tuple[AccountRow | None, Post | None, Response | None]:
    account, failure = _local_account(request)
    if failure is not None:
        return None, None, failure
    instance = _instance(request)
    uri = f"{instance.urls.actor(account)}/posts/{request.path_params['post_id']}"
    post = await instance.db.read(pq.get_post_by_uri, uri)
    if post is None or post.visibility in ("private", "direct"):
        # Followers-only and direct posts reach their audience by delivery only.
        return None, None, error(404, "no such post")
    if post.deleted_at:
        tombstone = {"@context": actors.AS_CONTEXT, "id": uri, "type": "Tombstone", "deleted": actors.iso_time(post.deleted_at)}
        return None, None, activity_response(dump_json(tombstone), 410)
    return account, post, None


async def post_view(request: Request) -> Response:
    """A local post: its Note as ActivityStreams JSON, or an HTML page."""
    account, post, failure = await _local_post(request)
    if failure is not None:
        return failure
    if not wants_activity_json(request):
        return await post_page(request, account, post)
    return activity_response(dump_json(_note_renderer(request, account)(post)))


async def post_activity_view(request: Request) -> Response:
    """The Create activity of a local post, at the id its delivery used."""
    account, post, failure = await _local_post(request)
    if failure is not None:
        return failure
    note = _note_renderer(request, account)(post)
    return activity_response(dump_json(notes.wrap_activity("Create", post, note, f"{post.uri}/activity")))


async def activity_view(request: Request) -> Response:
    """A published activity, served at its id."""
    account, failure = _local_account(request)
    if failure is not None:
        return failure
    instance = _instance(request)
    uri = f"{instance.urls.actor(account)}/activities/{request.path_params['activity_id']}"
    found = await instance.db.read(fq.get_activity_by_uri, uri)
    if found is None or found[0] != account.id:
        return error(404, "no such activity")
    return activity_response(found[1].encode())


routes = [
    Route("/.well-known/webfinger", webfinger_view),
    Route("/.well-known/host-meta", host_meta_view),
    Route("/.well-known/host-meta.json", host_meta_json_view),
    Route("/.well-known/nodeinfo", nodeinfo_index_view),
    Route("/nodeinfo/{version}", nodeinfo_view),
    Route("/actor", instance_actor_view),
    Route("/inbox", inbox_endpoint, methods=["POST"]),
    Route("/actor/inbox", inbox_endpoint, methods=["POST"]),
    Route("/@{username}", actor_view),
    Route("/@{username}/inbox", inbox_endpoint, methods=["POST"]),
    Route("/@{username}/followers", _follow_collection_view("followers")),
    Route("/@{username}/following", _follow_collection_view("following")),
    Route("/@{username}/outbox", outbox_view),
    Route("/@{username}/featured", featured_view),
    Route("/@{username}/posts/{post_id:int}", post_view),
    Route("/@{username}/posts/{post_id:int}/activity", post_activity_view),
    Route("/@{username}/activities/{activity_id:int}", activity_view),
]
