"""The `microfedi` command. Thin: parse, call the package, print.

Package modules are imported inside the commands so `microfedi --help` starts
fast on a Raspberry Pi.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

if TYPE_CHECKING:
    from microfedi.config import Settings
    from microfedi.store.database import Database

T = TypeVar("T")


def fail(message: str) -> NoReturn:
    """Print one line to stderr and exit 1 (bad input, not a crash)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _settings(ctx: click.Context) -> Settings:
    from microfedi.config import ConfigError, load_settings

    try:
        return load_settings(ctx.obj["data_dir"])
    except ConfigError as exc:
        fail(str(exc))


def _require_init(settings: Settings) -> None:
    if not settings.database_path.exists():
        fail(
            f"no microfedi data in {settings.data_dir}; run `microfedi init` first "
            "(or point MICROFEDI_DATA_DIR / --data-dir at your data dir)"
        )


def run_action(ctx: click.Context, action: Callable[[Database], Awaitable[T]]) -> T:
    """Open the database, run `action(db)`, and turn refused input into one line."""
    import asyncio

    from microfedi.errors import ActionError
    from microfedi.store.database import Database

    settings = _settings(ctx)
    _require_init(settings)
    try:
        with Database(settings.database_path) as db:
            return asyncio.run(action(db))
    except ActionError as exc:
        fail(str(exc))


def _read_password_stdin() -> str:
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        fail("no password on standard input; pipe one line, e.g. `echo 'secret…' | microfedi …`")
    return line


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="MICROFEDI_DATA_DIR",
    help="Data dir (database, microfedi.toml, media, cache). "
    "Default: $MICROFEDI_DATA_DIR or ~/.local/share/microfedi.",
)
@click.version_option(package_name="microfedi")
@click.pass_context
def main(ctx: click.Context, data_dir: Path | None) -> None:
    """microfedi: a small ActivityPub server for several domains on one SQLite file.

    Start with `microfedi init`, add a domain and a user, then `microfedi run`.
    """
    ctx.ensure_object(dict)
    ctx.obj["data_dir"] = data_dir


@main.command()
@click.pass_context
def init(ctx: click.Context) -> None:
    """Create the data dir, database and secret key. Safe to run twice."""
    from microfedi.config import ensure_data_dir
    from microfedi.store.database import Database

    settings = _settings(ctx)
    try:
        created = ensure_data_dir(settings)
    except OSError as exc:
        fail(f"cannot create {settings.data_dir}: {exc.strerror}; choose another --data-dir")
    with Database(settings.database_path):
        pass
    state = "created" if created else "already set up"
    click.echo(f"data dir {settings.data_dir}: {state}")


# ---------------------------------------------------------------- domains


@main.group()
def domain() -> None:
    """Add, list and remove the domains this server hosts."""


@domain.command("add")
@click.argument("name")
@click.option(
    "--service-domain",
    metavar="HOST",
    help="Host that serves this domain's ActivityPub URLs, when NAME itself only "
    "redirects /.well-known/{webfinger,host-meta,nodeinfo} there (split domain).",
)
@click.pass_context
def domain_add(ctx: click.Context, name: str, service_domain: str | None) -> None:
    """Add domain NAME; takes effect at once, even while the server runs."""
    from microfedi.domains import add_domain

    row = run_action(ctx, lambda db: add_domain(db, name, service_domain))
    click.echo(f"added domain {row.domain}")
    if row.service_domain:
        click.echo(f"actor URLs live on https://{row.service_domain}/ (point {row.service_domain} at this server)")
        click.echo(f"on {row.domain}, redirect these three paths (keep the query string) to {row.service_domain}:")
        for path in ("webfinger", "host-meta", "nodeinfo"):
            click.echo(f"  https://{row.domain}/.well-known/{path} -> https://{row.service_domain}/.well-known/{path}")
    else:
        click.echo(f"point {row.domain} (DNS A/AAAA) at this server; actor URLs live on https://{row.domain}/")
    click.echo(f"next: microfedi user add USER@{row.domain}")


@domain.command("list")
@click.pass_context
def domain_list(ctx: click.Context) -> None:
    """List domains, their service domain and their number of users."""
    from microfedi.domains import list_domains

    rows = run_action(ctx, list_domains)
    if not rows:
        click.echo("no domains yet; add one with: microfedi domain add DOMAIN")
        return
    width = max(len(d.domain) for d, _ in rows)
    for d, users in rows:
        served = f"served by {d.service_domain}" if d.service_domain else "serves itself"
        click.echo(f"{d.domain:<{width}}  {served:<30}  {users} user(s)")


@domain.command("remove")
@click.argument("name")
@click.option("--force", is_flag=True, help="Also remove the domain's users.")
@click.pass_context
def domain_remove(ctx: click.Context, name: str, force: bool) -> None:
    """Remove domain NAME (refused while it has users, unless --force).

    With --force its users are removed too, and their followers' servers get a
    Delete of each actor.
    """
    from microfedi.profiles import delete_domain

    removed_users = run_instance_action(ctx, lambda i: delete_domain(i, name, force=force))
    extra = f" and {removed_users} user(s)" if removed_users else ""
    click.echo(f"removed domain {name.lower()}{extra}")


# ---------------------------------------------------------------- users


@main.group()
def user() -> None:
    """Add, list and remove users, and set passwords."""


@user.command("add")
@click.argument("handle", metavar="USER@DOMAIN")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--admin", is_flag=True, help="Make the user an administrator.")
@click.pass_context
def user_add(ctx: click.Context, handle: str, password_stdin: bool, admin: bool) -> None:
    """Create a login and its actor (with a fresh RSA-2048 key).

    Without --password-stdin a password is generated and printed once.
    """
    from microfedi.accounts import add_user
    from microfedi.config import load_settings
    from microfedi.urls import Urls

    password = _read_password_stdin() if password_stdin else None
    account, password = run_action(ctx, lambda db: add_user(db, handle, password, admin=admin))
    urls = Urls(load_settings(ctx.obj["data_dir"]))
    click.echo(f"created @{account.handle}{' (admin)' if admin else ''}")
    click.echo(f"actor: {urls.actor(account)}")
    if not password_stdin:
        click.echo(f"password: {password}")
        click.echo(f"(shown once; change it with: microfedi user passwd {account.handle})")


@user.command("list")
@click.option("--domain", "domain_name", help="Only users of this domain.")
@click.pass_context
def user_list(ctx: click.Context, domain_name: str | None) -> None:
    """List users."""
    from microfedi.accounts import list_users

    accounts = run_action(ctx, lambda db: list_users(db, domain_name))
    if not accounts:
        click.echo("no users yet; add one with: microfedi user add USER@DOMAIN")
        return
    for account in accounts:
        flags = [f for f, on in (("admin", account.is_admin), ("locked", account.locked)) if on]
        click.echo(f"@{account.handle}" + (f"  ({', '.join(flags)})" if flags else ""))


@user.command("passwd")
@click.argument("handle", metavar="USER@DOMAIN")
@click.option("--password-stdin", is_flag=True, help="Read the new password from standard input.")
@click.pass_context
def user_passwd(ctx: click.Context, handle: str, password_stdin: bool) -> None:
    """Set a user's password (generated and printed unless --password-stdin)."""
    from microfedi.accounts import set_password

    password = _read_password_stdin() if password_stdin else None
    password = run_action(ctx, lambda db: set_password(db, handle, password))
    click.echo(f"password changed for {handle.lstrip('@')}")
    if not password_stdin:
        click.echo(f"password: {password}")


@user.command("remove")
@click.argument("handle", metavar="USER@DOMAIN")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def user_remove(ctx: click.Context, handle: str, yes: bool) -> None:
    """Remove a user's login and actor; followers' servers get a Delete.

    The username is not reused on that host.
    """
    from microfedi.profiles import delete_account

    if not yes:
        if not sys.stdin.isatty():
            fail(f"removing {handle} cannot be undone; pass --yes to confirm")
        click.confirm(f"Remove {handle}? This cannot be undone", abort=True)
    account = run_instance_action(ctx, lambda i: delete_account(i, handle))
    click.echo(f"removed @{account.handle} {QUEUED_NOTE}")


# ---------------------------------------------------------------- follows


def run_instance_action(ctx: click.Context, action: Callable[[Any], Awaitable[T]]) -> T:
    """Like run_action, with the whole Instance (directory, HTTP client) open."""
    import asyncio
    import logging

    from microfedi.errors import ActionError
    from microfedi.instance import Instance

    # The server logs; a command prints its result or one error line.
    logging.getLogger("microfedi").setLevel(logging.ERROR)
    settings = _settings(ctx)
    _require_init(settings)

    async def go() -> T:
        instance = Instance(settings)
        await instance.open()
        try:
            return await action(instance)
        finally:
            await instance.close()

    try:
        return asyncio.run(go())
    except ActionError as exc:
        fail(str(exc))


QUEUED_NOTE = "(delivered by the running server's task loop)"


@main.command()
@click.argument("local", metavar="USER@DOMAIN")
@click.argument("remote", metavar="ACCOUNT")
@click.pass_context
def follow(ctx: click.Context, local: str, remote: str) -> None:
    """Make local USER@DOMAIN follow ACCOUNT (user@domain or actor URL)."""
    from microfedi import follows

    target, state = run_instance_action(ctx, lambda i: follows.follow(i, local, remote))
    if state == "accepted":
        click.echo(f"{local.lstrip('@')} already follows {target.handle}")
    else:
        click.echo(f"follow request sent to {target.handle} ({target.uri}) {QUEUED_NOTE}")


@main.command()
@click.argument("local", metavar="USER@DOMAIN")
@click.argument("remote", metavar="ACCOUNT")
@click.pass_context
def unfollow(ctx: click.Context, local: str, remote: str) -> None:
    """Stop following ACCOUNT (sends Undo Follow)."""
    from microfedi import follows

    target = run_instance_action(ctx, lambda i: follows.unfollow(i, local, remote))
    click.echo(f"{local.lstrip('@')} no longer follows {target.handle} {QUEUED_NOTE}")


def _print_relationships(rows: list[Any], as_json: bool, empty: str) -> None:
    import json

    if as_json:
        data = {
            state: [{"uri": r.uri, "handle": r.handle, "since": r.since} for r in rows if r.state == state]
            for state in ("accepted", "pending")
        }
        click.echo(json.dumps(data, indent=2))
        return
    if not rows:
        click.echo(empty)
        return
    for state, title in (("accepted", "accepted"), ("pending", "pending (waiting for an answer)")):
        chosen = [r for r in rows if r.state == state]
        if chosen:
            click.echo(f"{title}:")
            for r in chosen:
                click.echo(f"  {r.handle}  {r.uri}")


def _relationship_command(name: str, help_text: str, empty: str) -> None:
    @main.command(name, help=help_text)
    @click.argument("local", metavar="USER@DOMAIN")
    @click.option("--json", "as_json", is_flag=True, help='JSON: {"accepted": [...], "pending": [...]}.')
    @click.pass_context
    def command(ctx: click.Context, local: str, as_json: bool) -> None:
        from microfedi import follows

        rows = run_instance_action(ctx, lambda i: follows.relationships(i, local, followers=name == "followers"))
        _print_relationships(rows, as_json, empty)


_relationship_command("followers", "List who follows USER@DOMAIN, accepted and pending apart.", "no followers yet")
_relationship_command("following", "List whom USER@DOMAIN follows, accepted and pending apart.", "not following anyone yet")


@main.command()
@click.argument("local", metavar="USER@DOMAIN")
@click.argument("remote", metavar="ACCOUNT")
@click.option("--reject", is_flag=True, help="Refuse instead (also removes an accepted follower).")
@click.pass_context
def approve(ctx: click.Context, local: str, remote: str, reject: bool) -> None:
    """Approve (or --reject) ACCOUNT's request to follow a locked USER@DOMAIN."""
    from microfedi import follows

    party = run_instance_action(ctx, lambda i: follows.answer_follow_request(i, local, remote, accept=not reject))
    click.echo(f"{'rejected' if reject else 'approved'} {party.handle} {QUEUED_NOTE}")


@main.command()
@click.argument("local", metavar="USER@DOMAIN")
@click.argument("remote", metavar="ACCOUNT")
@click.option("--undo", is_flag=True, help="Unblock.")
@click.pass_context
def block(ctx: click.Context, local: str, remote: str, undo: bool) -> None:
    """Block (or --undo) ACCOUNT: follows both ways end, and it is told."""
    from microfedi import follows

    party = run_instance_action(ctx, lambda i: follows.block(i, local, remote, undo=undo))
    click.echo(f"{'unblocked' if undo else 'blocked'} {party.handle} {QUEUED_NOTE}")


# ---------------------------------------------------------------- profile


def _field(value: str) -> tuple[str, str]:
    label, sep, text = value.partition("=")
    if not sep or not label.strip():
        raise click.BadParameter(f"{value!r}: write a field as NAME=VALUE")
    return label, text


@main.command()
@click.argument("local", metavar="USER@DOMAIN")
@click.option("--name", help="Display name.")
@click.option("--bio", help="Bio (plain text; links and #hashtags are linked).")
@click.option("--field", "fields", multiple=True, metavar="NAME=VALUE", help="A profile field (repeat, up to 4); replaces all fields.")
@click.option("--clear-fields", is_flag=True, help="Remove all profile fields.")
@click.option("--locked/--unlocked", default=None, help="Hold follow requests for approval (see `microfedi approve`).")
@click.option("--discoverable/--not-discoverable", default=None, help="List the account in directories and search.")
@click.pass_context
def profile(ctx: click.Context, local: str, name: str | None, bio: str | None, fields: tuple[str, ...], clear_fields: bool, locked: bool | None, discoverable: bool | None) -> None:
    """Edit USER@DOMAIN's profile; followers get an Update."""
    from microfedi import profiles

    try:
        parsed = [_field(f) for f in fields] if fields else ([] if clear_fields else None)
    except click.BadParameter as exc:
        fail(exc.message)
    account = run_instance_action(
        ctx, lambda i: profiles.update_profile(i, local, name=name, bio=bio, fields=parsed, locked=locked, discoverable=discoverable)
    )
    state = ", ".join(f for f, on in (("locked", account.locked), ("discoverable", account.discoverable)) if on) or "unlocked"
    click.echo(f"profile of @{account.handle} updated ({state}) {QUEUED_NOTE}")


@main.command()
@click.argument("local", metavar="USER@DOMAIN")
@click.argument("other", metavar="ACCOUNT")
@click.option("--remove", is_flag=True, help="Remove the alias instead.")
@click.pass_context
def alias(ctx: click.Context, local: str, other: str, remove: bool) -> None:
    """Add ACCOUNT to USER@DOMAIN's alsoKnownAs (needed before moving between them)."""
    from microfedi import profiles

    account, uri = run_instance_action(ctx, lambda i: profiles.set_alias(i, local, other, remove=remove))
    click.echo(f"@{account.handle} {'no longer lists' if remove else 'now lists'} {uri} as an alias")


@main.command()
@click.argument("local", metavar="USER@DOMAIN")
@click.argument("target", metavar="ACCOUNT")
@click.pass_context
def move(ctx: click.Context, local: str, target: str) -> None:
    """Move USER@DOMAIN to ACCOUNT: followers are told and re-follow it.

    ACCOUNT must list USER@DOMAIN in its aliases (alsoKnownAs) first.
    """
    from microfedi import profiles

    account, uri = run_instance_action(ctx, lambda i: profiles.move(i, local, target))
    click.echo(f"@{account.handle} moved to {uri}; followers are being told {QUEUED_NOTE}")


# ---------------------------------------------------------------- posts


def _post_action(ctx: click.Context, local: str, do: Callable[[Any], Awaitable[T]]) -> T:
    """Run `do(actions)` with the PostActions of local account `local`."""
    from microfedi.posts import PostActions

    async def go(instance: Any) -> T:
        return await do(await PostActions.of(instance, local))

    return run_instance_action(ctx, go)


@main.command()
@click.argument("local", metavar="USER@DOMAIN")
@click.argument("text")
@click.option("--visibility", type=click.Choice(["public", "unlisted", "private", "direct"]), default="public", show_default=True, help="private: followers only; direct: mentioned accounts only.")
@click.option("--cw", help="Content warning (the text is hidden behind it).")
@click.option("--reply-to", metavar="POST", help="Reply to a post (its URL, or a local post id).")
@click.option("--language", metavar="CODE", help="Language of the text, e.g. en.")
@click.pass_context
def post(ctx: click.Context, local: str, text: str, visibility: str, cw: str | None, reply_to: str | None, language: str | None) -> None:
    """Write a post. @user@domain mentions and #hashtags are linked."""
    created = _post_action(ctx, local, lambda a: a.create(text, visibility=visibility, cw=cw, reply_to=reply_to, language=language))
    click.echo(f"posted {created.uri} ({created.visibility}) {QUEUED_NOTE}")


@main.command()
@click.argument("local", metavar="USER@DOMAIN")
@click.argument("reference", metavar="POST")
@click.argument("text")
@click.option("--cw", help="New content warning (empty string removes it).")
@click.pass_context
def edit(ctx: click.Context, local: str, reference: str, text: str, cw: str | None) -> None:
    """Edit one of your posts (the old version is kept in its history)."""
    edited = _post_action(ctx, local, lambda a: a.edit(reference, text, cw=cw))
    click.echo(f"edited {edited.uri} {QUEUED_NOTE}")


@main.command()
@click.argument("local", metavar="USER@DOMAIN")
@click.argument("reference", metavar="POST")
@click.pass_context
def delete(ctx: click.Context, local: str, reference: str) -> None:
    """Delete one of your posts (a Tombstone stays at its URL)."""
    deleted = _post_action(ctx, local, lambda a: a.delete(reference))
    click.echo(f"deleted {deleted.uri} {QUEUED_NOTE}")


def _toggle_command(name: str, verb: str, past: str, help_text: str) -> None:
    @main.command(name, help=help_text)
    @click.argument("local", metavar="USER@DOMAIN")
    @click.argument("reference", metavar="POST")
    @click.option("--undo", is_flag=True, help=f"Undo the {verb}.")
    @click.pass_context
    def command(ctx: click.Context, local: str, reference: str, undo: bool) -> None:
        target = _post_action(ctx, local, lambda a: getattr(a, name)(reference, undo=undo))
        click.echo(f"{'un' + past if undo else past} {target.uri} {QUEUED_NOTE}")


_toggle_command("like", "like", "liked", "Like (favourite) a post, by URL or local id.")
_toggle_command("boost", "boost", "boosted", "Boost (announce) a public post to your followers.")
_toggle_command("pin", "pin", "pinned", "Pin one of your posts to your profile.")


def _post_json(item: Any, handles: dict[str, str]) -> dict[str, Any]:
    from microfedi.content import html_to_text

    post = item.post
    return {
        "id": str(post.id),
        "uri": post.uri,
        "url": post.url or post.uri,
        "author": post.author,
        "author_handle": handles.get(post.author, post.author),
        "boosted_by": item.boosted_by,
        "boosted_by_handle": handles.get(item.boosted_by) if item.boosted_by else None,
        "visibility": post.visibility,
        "summary": post.summary,
        "content": post.content,
        "text": html_to_text(post.content),
        "in_reply_to": post.in_reply_to,
        "language": post.language,
        "published": post.published,
        "edited": post.updated,
        "replies": post.reply_count,
        "boosts": post.boost_count,
        "likes": post.like_count,
        "hashtags": post.hashtags,
        "pinned": post.pinned,
        "mentions": [m["href"] for m in post.mentions],
        "attachments": post.attachments,
        "poll": post.poll,
    }


@main.command()
@click.argument("local", metavar="USER@DOMAIN")
@click.argument("which", type=click.Choice(["home", "local", "federated"]), default="home")
@click.option("--tag", help="A hashtag timeline instead.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 200))
@click.option("--max-id", type=int, help="Page: only entries older than this id.")
@click.option("--json", "as_json", is_flag=True, help="JSON list, newest first (stable fields).")
@click.pass_context
def timeline(ctx: click.Context, local: str, which: str, tag: str | None, limit: int, max_id: int | None, as_json: bool) -> None:
    """Show a timeline as USER@DOMAIN sees it."""
    import json

    from microfedi import posts as actions
    from microfedi.content import html_to_text

    async def read(instance: Any) -> tuple[list[Any], dict[str, str]]:
        items = await actions.timeline(instance, local, which, tag=tag, limit=limit, max_id=max_id)
        uris = [i.post.author for i in items] + [i.boosted_by for i in items if i.boosted_by]
        return items, await actions.actor_handles(instance, uris)

    items, handles = run_instance_action(ctx, read)
    if as_json:
        click.echo(json.dumps([dict(_post_json(i, handles), entry_id=str(i.entry_id)) for i in items], indent=2))
        return
    if not items:
        click.echo("nothing here yet")
    for item in items:
        post = item.post
        boosted = f"  (boosted by {handles.get(item.boosted_by)})" if item.boosted_by else ""
        click.echo(f"[{item.entry_id}] {handles.get(post.author)} · {post.visibility}{boosted}")
        if post.summary:
            click.echo(f"  CW: {html_to_text(post.summary)}")
        click.echo("  " + html_to_text(post.content).replace("\n", "\n  "))
        click.echo(f"  {post.uri}")


@main.command()
@click.argument("local", metavar="USER@DOMAIN")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 200))
@click.option("--json", "as_json", is_flag=True, help="JSON list, newest first.")
@click.pass_context
def notifications(ctx: click.Context, local: str, limit: int, as_json: bool) -> None:
    """Mentions, follows, likes, boosts, edits and moves for USER@DOMAIN."""
    import json

    from microfedi import posts as actions
    from microfedi.store import posts as pq

    async def read(instance: Any) -> tuple[list[Any], dict[str, str], dict[int, str]]:
        found = await actions.notifications(instance, local, limit=limit)
        handles = await actions.actor_handles(instance, [n.actor for n in found])
        uris = {}
        for n in found:
            if n.post_id:
                post = await instance.db.read(pq.get_post, n.post_id)
                uris[n.post_id] = post.uri if post else ""
        return found, handles, uris

    found, handles, uris = run_instance_action(ctx, read)
    rows = [
        {"id": str(n.id), "type": n.type, "actor": n.actor, "actor_handle": handles.get(n.actor, n.actor),
         "post": uris.get(n.post_id) if n.post_id else None, "created_at": n.created_at}
        for n in found
    ]  # fmt: skip
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no notifications")
    for row in rows:
        click.echo(f"{row['type']:<15} {row['actor_handle']}" + (f"  {row['post']}" if row["post"] else ""))


# ---------------------------------------------------------------- serving


def _serve(settings: Settings, host: str, port: int, certfile: Path | None, keyfile: Path | None, access_log: bool) -> None:
    import logging

    import uvicorn

    from microfedi.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request at INFO; deliveries and fetches are counted in /metrics instead.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config: dict[str, Any] = dict(
        host=host,
        port=port,
        access_log=access_log,
        proxy_headers=True,
        server_header=False,
        lifespan="on",
        log_config=None,
        # Peers' idle keep-alive connections would hold a restart this long.
        timeout_graceful_shutdown=3,
    )
    if certfile:
        config.update(ssl_certfile=str(certfile), ssl_keyfile=str(keyfile))
    try:
        uvicorn.run(create_app(settings), **config)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror}; pick another --host/--port")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.option("--ssl-certfile", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Serve HTTPS with this certificate (PEM).")
@click.option("--ssl-keyfile", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="The certificate's private key (PEM).")
@click.option("--access-log/--no-access-log", default=False, show_default=True, help="Log every request.")
@click.pass_context
def run(ctx: click.Context, host: str, port: int, ssl_certfile: Path | None, ssl_keyfile: Path | None, access_log: bool) -> None:
    """Serve HTTP (HTTPS with a certificate) in one process.

    Behind a reverse proxy such as Caddy, keep the default 127.0.0.1 and let the
    proxy pass the Host header through.
    """
    if bool(ssl_certfile) != bool(ssl_keyfile):
        fail("--ssl-certfile and --ssl-keyfile go together; give both or neither")
    settings = _settings(ctx)
    _require_init(settings)
    _serve(settings, host, port, ssl_certfile, ssl_keyfile, access_log)


@main.command()
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.pass_context
def demo(ctx: click.Context, port: int) -> None:
    """Local quick start: a `localhost` domain, an admin user, and the server.

    Uses the data dir as usual (set --data-dir to keep it apart from a real
    install), serves plain http on localhost, and prints the URL and login.
    """
    import asyncio

    from microfedi.accounts import add_user, set_password
    from microfedi.config import ensure_data_dir, write_setting
    from microfedi.domains import add_domain
    from microfedi.store import directory as q
    from microfedi.store.database import Database

    settings = _settings(ctx)
    ensure_data_dir(settings)
    write_setting(settings, "public_scheme", "http")
    write_setting(settings, "public_port", port)

    async def prepare(db: Database) -> str:
        if await db.read(q.get_domain, "localhost") is None:
            await add_domain(db, "localhost")
        if await db.read(q.find_account_by_handle, "admin", "localhost") is None:
            _, password = await add_user(db, "admin@localhost", None, admin=True)
            return password
        return await set_password(db, "admin@localhost", None)

    with Database(settings.database_path) as db:
        password = asyncio.run(prepare(db))
    click.echo(f"microfedi demo: data dir {settings.data_dir}")
    click.echo(f"  URL:      http://localhost:{port}/")
    click.echo(f"  profile:  http://localhost:{port}/@admin")
    click.echo("  login:    admin@localhost")
    click.echo(f"  password: {password}")
    click.echo(f"  try:      curl 'http://localhost:{port}/.well-known/webfinger?resource=acct:admin@localhost'")
    _serve(settings, "127.0.0.1", port, None, None, access_log=True)


# ---------------------------------------------------------------- tasks


def _duration(seconds: float) -> str:
    """`45s`, `2m05s`, `3h02m`, `2d04h`: short enough for a table column."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


@main.group("tasks", invoke_without_command=True)
@click.pass_context
def tasks_group(ctx: click.Context) -> None:
    """Show the task queue, list dead tasks, retry them.

    Without a subcommand: per task kind, how many are queued, running, done in
    the last hour, retrying (failed before, will run again) and dead, and how
    long the oldest due task has waited; then the remote hosts that are down.
    """
    if ctx.invoked_subcommand is not None:
        return
    from microfedi.tasks.status import queue_status

    status = run_action(ctx, queue_status)
    if not status.kinds:
        click.echo("no tasks yet")
    else:
        width = max(len("kind"), *(len(c.kind) for c in status.kinds))
        click.echo(f"{'kind':<{width}}  {'queued':>7}  {'running':>7}  {'done 1h':>7}  {'retrying':>8}  {'dead':>6}  oldest due")
        for c in status.kinds:
            oldest = _duration(status.oldest_due_age(c)) if c.oldest_due_at is not None else "-"
            click.echo(
                f"{c.kind:<{width}}  {c.queued:>7}  {c.running:>7}  {c.done_recently:>7}  "
                f"{c.retrying:>8}  {c.dead:>6}  {oldest}"
            )
    if not status.open_circuits:
        click.echo("no hosts down")
        return
    click.echo(f"hosts down ({len(status.open_circuits)}):")
    for host in status.open_circuits:
        assert host.down_until is not None
        if host.down_until > status.taken_at:
            state = f"down for {_duration(host.down_until - status.taken_at)} more"
        else:
            state = "back up for a probe"
        click.echo(f"  {host.host}  {state}, {host.consecutive_failures} failures in a row: {host.last_error or '-'}")


@tasks_group.command("dead")
@click.option("--kind", help="Only tasks of this kind.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1), help="At most this many.")
@click.pass_context
def tasks_dead(ctx: click.Context, kind: str | None, limit: int) -> None:
    """List dead tasks (most recent first) with their last error."""
    from microfedi.tasks.status import list_dead_tasks

    rows = run_action(ctx, lambda db: list_dead_tasks(db, kind, limit))
    if not rows:
        click.echo("no dead tasks" + (f" of kind {kind}" if kind else ""))
        return
    kind_width = max(len("kind"), *(len(t.kind) for t in rows))
    host_width = max(len("host"), *(len(t.host or "-") for t in rows))
    click.echo(f"{'id':<20}  {'kind':<{kind_width}}  {'host':<{host_width}}  attempts  last error")
    for t in rows:
        click.echo(f"{t.id:<20}  {t.kind:<{kind_width}}  {t.host or '-':<{host_width}}  {t.attempts:>8}  {t.last_error or '-'}")


@tasks_group.command("retry")
@click.argument("task_id", metavar="[ID]", type=int, required=False)
@click.option("--all-dead", is_flag=True, help="Retry every dead task (of --kind, if given).")
@click.option("--kind", help="With --all-dead: only tasks of this kind.")
@click.pass_context
def tasks_retry(ctx: click.Context, task_id: int | None, all_dead: bool, kind: str | None) -> None:
    """Queue dead task ID, or all dead tasks, again with fresh attempts.

    A running server picks them up within a second or two.
    """
    from microfedi.tasks.queue import retry_dead_tasks

    if (task_id is None) == (not all_dead):
        fail("give either a task ID or --all-dead (see: microfedi tasks dead)")
    if kind and not all_dead:
        fail("--kind goes with --all-dead")
    count = run_action(ctx, lambda db: retry_dead_tasks(db, task_id=task_id, kind=kind))
    if task_id is not None:
        click.echo(f"requeued task {task_id}")
    else:
        click.echo(f"requeued {count} dead task(s)" + (f" of kind {kind}" if kind else ""))
