"""What local accounts do with posts: write, reply, edit, delete, like, boost, pin.

One action layer for the CLI now and the web UI and client API later. Each
action stores its effect and queues its deliveries in one transaction, and
fans out to local home timelines and notifications directly (local readers
never wait for HTTP).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from microfedi.accounts import get_user
from microfedi.content import extract_hashtags, extract_mentions, plain_text_to_html
from microfedi.errors import ActionError
from microfedi.federation import activities
from microfedi.federation.delivery import queue_publication
from microfedi.federation.notes import NOTE_TYPES, ingest_note, note_document, wrap_activity
from microfedi.federation.actors import iso_time
from microfedi.federation.remote import RemoteError, fetch_authoritative, resolve
from microfedi.store import federation as fq
from microfedi.store import posts as pq
from microfedi.store.directory import AccountRow
from microfedi.store.ids import new_id
from microfedi.store.posts import NewPost, Post

VISIBILITIES = ("public", "unlisted", "private", "direct")
MAX_LENGTH = 5000


@dataclass(frozen=True)
class Recipient:
    uri: str
    name: str  # @user@domain
    profile: str
    inbox: str
    local_account: int | None


class PostActions:
    """The post actions of one local account."""

    def __init__(self, instance: Any, account: AccountRow) -> None:
        self.instance = instance
        self.account = account
        self.urls = instance.urls
        self.me = instance.urls.actor(account)
        self.followers = instance.urls.followers(account)

    @classmethod
    async def of(cls, instance: Any, handle: str) -> PostActions:
        return cls(instance, await get_user(instance.db, handle))

    def tag_url(self, tag: str) -> str:
        return f"{self.urls.origin(self.account.host)}/tags/{quote(tag)}"

    # ---------------------------------------------------------- finding things

    async def find_post(self, reference: str) -> Post:
        """A post by local id, by URI, or fetched from its server."""
        reference = reference.strip()
        db = self.instance.db
        post = None
        if reference.isdigit():
            post = await db.read(pq.get_post, int(reference))
        elif reference.startswith(("https://", "http://")):
            post = await db.read(pq.get_post_by_uri, reference)
            if post is None:
                post = await self._fetch_remote(reference)
        if post is None or post.deleted_at:
            raise ActionError(f"no post {reference}", status=404)
        return post

    async def _fetch_remote(self, uri: str) -> Post | None:
        try:
            doc = await fetch_authoritative(self.instance, uri, self.account.host)
        except RemoteError as exc:
            raise ActionError(f"cannot fetch {uri}: {exc.reason}", status=404) from None
        if activities.type_of(doc) not in NOTE_TYPES:
            raise ActionError(f"{uri} is not a post")
        return await ingest_note(self.instance, doc)

    async def _recipient(self, reference: str) -> Recipient:
        local = self.instance.local_account_by_reference(reference)
        if local is not None:
            uri = self.urls.actor(local)
            return Recipient(uri, f"@{local.handle}", uri, self.urls.inbox(local), local.id)
        actor = await resolve(self.instance, reference, signer_host=self.account.host)
        return Recipient(actor.uri, f"@{actor.handle}", actor.url or actor.uri, actor.inbox, None)

    async def _mentions(self, text: str, parent: Post | None) -> list[Recipient]:
        found: dict[str, Recipient] = {}
        # A bare @name means an account on the author's own domain, as on Mastodon.
        for handle in extract_mentions(text, default_domain=self.account.domain):
            recipient = await self._recipient(handle)
            found[handle] = recipient
        if parent is not None and parent.author != self.me:
            recipient = await self._recipient(parent.author)
            found.setdefault(recipient.name.lstrip("@"), recipient)
        return list(found.values())

    # ---------------------------------------------------------- writing

    async def create(
        self, text: str, *, visibility: str = "public", cw: str | None = None,
        reply_to: str | None = None, language: str | None = None,
    ) -> Post:  # fmt: skip
        """Write a note (a reply when `reply_to` names a post) and send it."""
        text = text.strip()
        if not text:
            raise ActionError("the post is empty")
        if len(text) > MAX_LENGTH:
            raise ActionError(f"the post is {len(text)} characters; the limit is {MAX_LENGTH}")
        if visibility not in VISIBILITIES:
            raise ActionError(f"visibility must be one of {', '.join(VISIBILITIES)}, not {visibility!r}")
        parent = await self.find_post(reply_to) if reply_to else None
        recipients = await self._mentions(text, parent)
        html = plain_text_to_html(
            text, mention_links={r.name.lstrip("@"): r.profile for r in recipients}, tag_url=self.tag_url,
            default_domain=self.account.domain,
        )
        post_id = new_id()
        uri = f"{self.me}/posts/{post_id}"
        mentions = [{"href": r.uri, "name": r.name} for r in recipients]
        post = NewPost(
            id=post_id, uri=uri, url=uri, author=self.me, account_id=self.account.id, type="Note",
            visibility=visibility, conversation=parent.conversation if parent else uri, published=time.time(),
            content=html, summary=(cw or "").strip(), sensitive=bool(cw), in_reply_to=parent.uri if parent else None,
            source=text, language=language, mentions=mentions, hashtags=extract_hashtags(text),
        )  # fmt: skip
        return await self._publish_new(post, recipients)

    async def _publish_new(self, post: NewPost, recipients: list[Recipient]) -> Post:
        local_followers = self._local_followers_query()
        account_id = self.account.id

        def write(conn: Any) -> None:
            pq.insert_post(conn, post)
            stored = pq.get_post(conn, post.id)
            homes = [account_id]
            if post.visibility == "direct":
                homes += [r.local_account for r in recipients if r.local_account]
            else:
                homes += local_followers(conn)
            pq.add_home_entries(conn, list(dict.fromkeys(homes)), post.id, post.id)
            for r in recipients:
                if r.local_account and r.local_account != account_id:
                    pq.add_notification(conn, r.local_account, "mention", self.me, post.uri, post.id)
            note = note_document(stored, self.followers, self.tag_url)
            create = wrap_activity("Create", stored, note, f"{post.uri}/activity")
            self._queue(conn, create, stored.visibility, recipients)

        await self.instance.db.write(write)
        self.instance.wake_tasks()
        stored = await self.instance.db.read(pq.get_post, post.id)
        assert stored is not None
        return stored

    def _local_followers_query(self) -> Any:
        """fq.local_followers of this account, as a function of the writer's connection."""
        local = {uri: a.id for uri, a in self.instance.local_account_uris().items()}
        return lambda conn: fq.local_followers(conn, self.me, local)

    def _queue(
        self, conn: Any, document: dict[str, Any], visibility: str, recipients: list[Recipient], extra: tuple[str, ...] = ()
    ) -> None:
        """Deliveries: followers' shared inboxes unless direct, plus remote mentioned actors."""
        inboxes = [r.inbox for r in recipients if r.local_account is None] + list(extra)
        followers_of = self.me if visibility != "direct" else None
        queue_publication(conn, self.account.id, document, inboxes, followers_of, {})

    async def _recipients_of(self, post: Post) -> list[Recipient]:
        """The mentioned actors of a stored post, for its Update and Delete."""
        found = []
        for mention in post.mentions:
            try:
                found.append(await self._recipient(mention["href"]))
            except ActionError:
                continue  # an account that vanished since; the others still hear
        return found

    async def _own(self, reference: str) -> Post:
        post = await self.find_post(reference)
        if post.author != self.me:
            raise ActionError("only the author of a post can change it", status=403)
        return post

    async def edit(self, reference: str, text: str, *, cw: str | None = None) -> Post:
        """Edit a post (the previous version is kept) and send an Update."""
        post = await self._own(reference)
        text = text.strip()
        if not text:
            raise ActionError("the post is empty")
        parent = await self.instance.db.read(pq.get_post_by_uri, post.in_reply_to) if post.in_reply_to else None
        recipients = await self._mentions(text, parent)
        html = plain_text_to_html(
            text, mention_links={r.name.lstrip("@"): r.profile for r in recipients}, tag_url=self.tag_url,
            default_domain=self.account.domain,
        )
        mentions = [{"href": r.uri, "name": r.name} for r in recipients]
        now = time.time()
        summary = post.summary if cw is None else cw.strip()

        def write(conn: Any) -> None:
            pq.update_post(
                conn, post.id, content=html, summary=summary, sensitive=bool(summary), updated=now,
                mentions=mentions, hashtags=extract_hashtags(text), attachments=post.attachments,
                poll=post.poll, source=text,
            )  # fmt: skip
            stored = pq.get_post(conn, post.id)
            note = note_document(stored, self.followers, self.tag_url)
            update = wrap_activity("Update", stored, note, activities.activity_uri(self.me))
            self._queue(conn, update, stored.visibility, recipients)

        await self.instance.db.write(write)
        self.instance.wake_tasks()
        return await self.find_post(str(post.id))

    async def delete(self, reference: str) -> Post:
        """Delete a post: a Tombstone stays at its URL, and a Delete goes out."""
        post = await self._own(reference)
        recipients = await self._recipients_of(post)
        document = activities.make("Delete", self.me, {"id": post.uri, "type": "Tombstone"})
        document["to"], document["cc"] = [activities.PUBLIC], [self.followers]

        def write(conn: Any) -> None:
            pq.delete_post(conn, post.id)
            self._queue(conn, document, post.visibility, recipients)

        await self.instance.db.write(write)
        self.instance.wake_tasks()
        return post

    async def like(self, reference: str, *, undo: bool = False) -> Post:
        """Like (favourite) a post, or undo it."""
        post = await self.find_post(reference)
        author_inbox = await self._author_inbox(post)
        local_author = self.instance.local_account_by_reference(post.author)

        def write(conn: Any) -> None:
            existing = pq.find_like(conn, actor=self.me, post_id=post.id)
            if undo:
                if existing is None:
                    raise ActionError("you have not liked that post", status=404)
                pq.delete_like(conn, self.me, post.id)
                document = activities.make("Undo", self.me, {"id": existing[0], "type": "Like", "actor": self.me, "object": post.uri})
            else:
                if existing is not None:
                    return
                document = activities.make("Like", self.me, post.uri)
                pq.put_like(conn, document["id"], self.me, post.id)
                if local_author is not None and local_author.id != self.account.id:
                    pq.add_notification(conn, local_author.id, "favourite", self.me, document["id"], post.id)
            if author_inbox:
                queue_publication(conn, self.account.id, document, [author_inbox], None, {})

        await self.instance.db.write(write)
        self.instance.wake_tasks()
        return await self.find_post(str(post.id))

    async def _author_inbox(self, post: Post) -> str | None:
        """The inbox of a remote post's author (None for a local author)."""
        if self.instance.local_account_by_reference(post.author) is not None:
            return None
        return (await self._recipient(post.author)).inbox

    async def boost(self, reference: str, *, undo: bool = False) -> Post:
        """Boost (Announce) a public or unlisted post, or undo it."""
        post = await self.find_post(reference)
        if post.visibility not in ("public", "unlisted"):
            raise ActionError(f"a {post.visibility} post cannot be boosted")
        author_inbox = await self._author_inbox(post)
        local_author = self.instance.local_account_by_reference(post.author)
        local_followers = self._local_followers_query()
        extra = (author_inbox,) if author_inbox else ()

        def write(conn: Any) -> None:
            existing = pq.find_boost(conn, actor=self.me, post_id=post.id)
            if undo:
                if existing is None:
                    raise ActionError("you have not boosted that post", status=404)
                pq.delete_boost(conn, existing.id)
                original = {"id": existing.uri, "type": "Announce", "actor": self.me, "object": post.uri}
                document = activities.make("Undo", self.me, original)
            else:
                if existing is not None:
                    return
                document = activities.make("Announce", self.me, post.uri)
                document["to"], document["cc"] = [activities.PUBLIC], [self.followers, post.author]
                document["published"] = iso_time(time.time())
                boost, _ = pq.put_boost(conn, document["id"], self.me, post.id, "public")
                homes = [self.account.id] + local_followers(conn)
                pq.add_home_entries(conn, list(dict.fromkeys(homes)), boost.id, post.id, boost.id)
                if local_author is not None and local_author.id != self.account.id:
                    pq.add_notification(conn, local_author.id, "reblog", self.me, document["id"], post.id)
            self._queue(conn, document, "public", [], extra)

        await self.instance.db.write(write)
        self.instance.wake_tasks()
        return await self.find_post(str(post.id))

    async def pin(self, reference: str, *, undo: bool = False) -> Post:
        """Pin (feature) one of your public posts on your profile, or unpin it."""
        post = await self._own(reference)
        if post.visibility not in ("public", "unlisted"):
            raise ActionError("only public and unlisted posts can be pinned")
        document = activities.make("Remove" if undo else "Add", self.me, post.uri)
        document["target"] = self.urls.featured(self.account)
        document["to"], document["cc"] = [activities.PUBLIC], [self.followers]

        def write(conn: Any) -> None:
            pq.set_pinned(conn, post.id, not undo)
            self._queue(conn, document, "public", [])

        await self.instance.db.write(write)
        self.instance.wake_tasks()
        return await self.find_post(str(post.id))


# ---------------------------------------------------------------- reading


TIMELINES = ("home", "local", "federated")


async def timeline(
    instance: Any, handle: str, which: str = "home", *, tag: str | None = None, limit: int = 40, max_id: int | None = None
) -> list[pq.TimelineItem]:
    """A page of a timeline as `handle` sees it (blocks honoured), newest first."""
    account = await get_user(instance.db, handle)
    me = instance.urls.actor(account)
    limit = max(1, min(limit, 200))
    if tag is not None:
        name = tag.lstrip("#").lower()
        return await instance.db.read(lambda c: pq.public_page(c, local_only=False, me=me, tag=name, limit=limit, max_id=max_id))
    if which == "home":
        return await instance.db.read(lambda c: pq.home_page(c, account.id, me, limit=limit, max_id=max_id))
    if which in ("local", "federated"):
        local = which == "local"
        return await instance.db.read(lambda c: pq.public_page(c, local_only=local, me=me, limit=limit, max_id=max_id))
    raise ActionError(f"no timeline {which!r}; choose one of {', '.join(TIMELINES)}")


async def notifications(instance: Any, handle: str, *, limit: int = 40, max_id: int | None = None) -> list[pq.Notification]:
    account = await get_user(instance.db, handle)
    return await instance.db.read(lambda c: pq.list_notifications(c, account.id, limit=limit, max_id=max_id))


def handle_of(instance: Any, uri: str, remote: dict[str, Any]) -> str:
    """How to show an actor: its handle when known, else its URI."""
    local = instance.local_account_by_reference(uri)
    if local is not None:
        return local.handle
    if uri in remote:
        return remote[uri].handle
    return uri


async def actor_handles(instance: Any, uris: list[str]) -> dict[str, str]:
    remote = await instance.db.read(fq.get_remote_actors, list(dict.fromkeys(uris)))
    return {uri: handle_of(instance, uri, remote) for uri in uris}
