"""Notes (posts) both ways: remote objects checked and stored, local posts rendered.

`ingest_note` is the one way a remote object becomes a post here, whether it
came in a Create, was boosted, or was fetched as the parent of a reply: the
object must come from the same origin as its author, its HTML is sanitized to
Mastodon's allowed set, and it lands in the home timelines and notifications
of the local accounts entitled to see it.
"""

from __future__ import annotations

import logging
import re
from html import escape
from datetime import datetime, timezone
from typing import Any

from microfedi.content import sanitize_html
from microfedi.federation.activities import PUBLIC, id_of, ids_of, link_of, type_of
from microfedi.federation.actors import AS_CONTEXT, iso_time
from microfedi.federation.remote import host_of_url
from microfedi.store import federation as fq
from microfedi.store import posts as pq
from microfedi.store.posts import NewPost, Post
from microfedi.tasks.queue import enqueue

log = logging.getLogger(__name__)

NOTE_TYPES = frozenset({"Note", "Article", "Page", "Question", "Video", "Audio", "Image", "Event"})
PUBLIC_ALIASES = frozenset({PUBLIC, "as:Public", "Public"})
# How far up a reply chain we fetch parents we do not have.
MAX_REPLY_DEPTH = 5
MAX_ITEMS = 50  # tags, attachments, poll options: more are dropped
_TAG_NAME = re.compile(r"^\w+$")
NOTE_CONTEXT: list[Any] = [
    AS_CONTEXT,
    {
        "sensitive": "as:sensitive",
        "Hashtag": "as:Hashtag",
        "toot": "http://joinmastodon.org/ns#",
        "Emoji": "toot:Emoji",
        "conversation": "http://ostatus.org#conversation",
    },
]


class NoteError(Exception):
    """An object we refuse to store; the reason says why."""


def parse_time(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def visibility_of(doc: dict[str, Any], author_followers: str | None) -> str:
    """Mastodon's reading of the addressing: public, unlisted, private or direct."""
    to, cc = set(ids_of(doc.get("to"))), set(ids_of(doc.get("cc")))
    if to & PUBLIC_ALIASES:
        return "public"
    if cc & PUBLIC_ALIASES:
        return "unlisted"
    if author_followers and author_followers in to | cc:
        return "private"
    if any(uri.endswith("/followers") for uri in to | cc):
        return "private"
    return "direct"


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):  # contentMap / nameMap: any language will do
        return next((v for v in value.values() if isinstance(v, str)), "")
    return ""


def _attachments(doc: dict[str, Any]) -> list[dict[str, Any]]:
    raw = doc.get("attachment")
    items = raw if isinstance(raw, list) else [raw] if raw else []
    found = []
    for item in items[:MAX_ITEMS]:
        if not isinstance(item, dict):
            continue
        url = link_of(item.get("url")) or link_of(item.get("href"))
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            continue
        entry: dict[str, Any] = {"url": url, "type": type_of(item) or "Document"}
        for key in ("mediaType", "name", "blurhash"):
            if isinstance(item.get(key), str):
                entry[key] = item[key][:1500]
        for key in ("width", "height"):
            if isinstance(item.get(key), int):
                entry[key] = item[key]
        found.append(entry)
    return found


def _tags(doc: dict[str, Any]) -> tuple[list[dict[str, str]], list[str], list[dict[str, str]]]:
    """(mentions, hashtags, emoji) from the `tag` list."""
    raw = doc.get("tag")
    items = raw if isinstance(raw, list) else [raw] if raw else []
    mentions, hashtags, emoji = [], [], []
    for item in items[: MAX_ITEMS * 3]:
        kind = type_of(item)
        if kind == "Mention" and isinstance(item.get("href"), str) and item["href"].startswith(("https://", "http://")):
            if all(m["href"] != item["href"] for m in mentions):
                mentions.append({"href": item["href"], "name": str(item.get("name") or "")[:300]})
        elif kind == "Hashtag" and isinstance(item.get("name"), str):
            tag = item["name"].lstrip("#").strip().lower()[:100]
            # Only what could be typed as a #hashtag: word characters, not all digits.
            if tag and _TAG_NAME.match(tag) and not tag.isdigit() and tag not in hashtags:
                hashtags.append(tag)
        elif kind == "Emoji" and isinstance(item.get("name"), str):
            icon = item.get("icon")
            url = icon.get("url") if isinstance(icon, dict) else None
            if isinstance(url, str) and url.startswith(("https://", "http://")):
                emoji.append({"name": item["name"].strip(":")[:100], "url": url})
    return mentions[:MAX_ITEMS], hashtags[:MAX_ITEMS], emoji[:MAX_ITEMS]


def _poll(doc: dict[str, Any]) -> dict[str, Any] | None:
    if type_of(doc) != "Question":
        return None
    multiple = "anyOf" in doc
    raw = doc.get("anyOf" if multiple else "oneOf")
    options = []
    for option in (raw if isinstance(raw, list) else [])[:MAX_ITEMS]:
        if not isinstance(option, dict):
            continue
        replies = option.get("replies")
        votes = replies.get("totalItems") if isinstance(replies, dict) else 0
        options.append({"title": _text(option.get("name"))[:500], "votes": votes if isinstance(votes, int) else 0})
    closes = parse_time(doc.get("endTime")) or parse_time(doc.get("closed"))
    voters = doc.get("votersCount")
    return {
        "multiple": multiple,
        "options": options,
        "expires_at": closes,
        "closed": doc.get("closed") is not None,
        "voters": voters if isinstance(voters, int) else None,
    }


def note_fields(doc: dict[str, Any], author_followers: str | None) -> NewPost:
    """Check a remote object and turn it into a NewPost, or NoteError."""
    uri = id_of(doc.get("id"))
    kind = type_of(doc)
    if not uri or not uri.startswith(("https://", "http://")):
        raise NoteError("the object has no http(s) id")
    if kind not in NOTE_TYPES:
        raise NoteError(f"{kind or 'an object without type'} is not a kind of post we show")
    author = id_of(doc.get("attributedTo")) or (ids_of(doc.get("attributedTo")) or [None])[0]
    if not author:
        raise NoteError("the object has no attributedTo")
    if host_of_url(author) != host_of_url(uri):
        raise NoteError(f"the object {uri} claims an author on another host ({author})")
    content = _text(doc.get("content")) or _text(doc.get("contentMap"))
    title = _text(doc.get("name")) if kind in ("Article", "Page", "Event", "Video") else ""
    html = sanitize_html(content)
    if title:
        html = f"<p><strong>{escape(title)}</strong></p>{html}"
    mentions, hashtags, emoji = _tags(doc)
    in_reply_to = link_of(doc.get("inReplyTo"))
    url = link_of(doc.get("url"))
    published = parse_time(doc.get("published")) or parse_time(doc.get("updated"))
    language = None
    if isinstance(doc.get("contentMap"), dict) and doc["contentMap"]:
        language = str(next(iter(doc["contentMap"])))[:16]
    return NewPost(
        uri=uri,
        url=url if isinstance(url, str) and url.startswith(("https://", "http://")) else None,
        author=author,
        type=kind,
        visibility=visibility_of(doc, author_followers),
        conversation=id_of(doc.get("context")) or id_of(doc.get("conversation")) or in_reply_to or uri,
        published=published or 0.0,
        content=html,
        summary=sanitize_html(_text(doc.get("summary"))) if kind != "Article" else "",
        sensitive=doc.get("sensitive") is True,
        in_reply_to=in_reply_to,
        language=language,
        updated=parse_time(doc.get("updated")),
        recipients=(ids_of(doc.get("to")) + ids_of(doc.get("cc")))[: MAX_ITEMS * 4],
        mentions=mentions,
        hashtags=hashtags,
        emoji=emoji,
        attachments=_attachments(doc),
        poll=_poll(doc),
    )


def audience(instance: Any, post: NewPost | Post, follows_author: list[int]) -> tuple[list[int], list[int]]:
    """(home timelines, mentioned local accounts) that may see a post."""
    mentioned = []
    for uri in dict.fromkeys(post.recipients + [m["href"] for m in post.mentions]):
        account = instance.local_account_by_reference(uri)
        if account is not None:
            mentioned.append(account.id)
    # As Mastodon: a mention from someone you do not follow is a notification,
    # not a home timeline entry; a direct message is both.
    homes = list(mentioned) if post.visibility == "direct" else []
    if post.visibility != "direct":
        homes += [a for a in follows_author if a not in homes]
    return homes, mentioned


def _store(conn: Any, post: NewPost, local_accounts: dict[str, int], instance: Any, activity_id: str) -> tuple[int, bool]:
    post_id, created = pq.insert_post(conn, post)
    if not created:
        return post_id, False
    homes, mentioned = audience(instance, post, fq.local_followers(conn, post.author, local_accounts))
    uri_of = {ident: uri for uri, ident in local_accounts.items()}
    blocked = {a for a in homes if fq.is_blocked(conn, uri_of[a], post.author)}
    pq.add_home_entries(conn, [a for a in homes if a not in blocked], post_id, post_id)
    for account_id in mentioned:
        if account_id not in blocked:
            pq.add_notification(conn, account_id, "mention", post.author, activity_id, post_id)
    return post_id, True


async def ingest_note(instance: Any, doc: dict[str, Any], *, activity_id: str | None = None, depth: int = 0) -> Post:
    """Store a checked remote object as a post (idempotent); queue a fetch of an unknown parent."""
    author = id_of(doc.get("attributedTo")) or (ids_of(doc.get("attributedTo")) or [""])[0]
    cached = await instance.db.read(fq.get_remote_actor, author)
    post = note_fields(doc, cached.followers if cached else None)
    local_accounts = {uri: a.id for uri, a in instance.local_account_uris().items()}

    def store(conn: Any) -> int:
        post_id, created = _store(conn, post, local_accounts, instance, activity_id or post.uri)
        if created and post.in_reply_to and depth < MAX_REPLY_DEPTH and pq.get_post_by_uri(conn, post.in_reply_to) is None:
            if instance.local_account_by_reference(post.in_reply_to) is None:
                enqueue(
                    conn, "fetch-object", {"uri": post.in_reply_to, "depth": depth + 1},
                    dedupe_key=f"fetch-object:{post.in_reply_to}", host=host_of_url(post.in_reply_to),
                )  # fmt: skip
        return post_id

    post_id = await instance.db.write(store)
    stored = await instance.db.read(pq.get_post, post_id)
    assert stored is not None
    return stored


# ---------------------------------------------------------------- local posts


def addressing(visibility: str, followers: str, mentioned: list[str]) -> tuple[list[str], list[str]]:
    """(to, cc) for a local post of `visibility`, as Mastodon addresses them."""
    if visibility == "public":
        return [PUBLIC], [followers, *mentioned]
    if visibility == "unlisted":
        return [followers], [PUBLIC, *mentioned]
    if visibility == "private":
        return [followers], list(mentioned)
    return list(mentioned), []


def note_document(post: Post, followers: str, tag_url: Any, *, context: bool = True) -> dict[str, Any]:
    """The Note served at a local post's id and embedded in its activities."""
    mentioned = [m["href"] for m in post.mentions]
    to, cc = addressing(post.visibility, followers, mentioned)
    doc: dict[str, Any] = {
        "id": post.uri,
        "type": post.type,
        "attributedTo": post.author,
        "content": post.content,
        "summary": post.summary or None,
        "sensitive": post.sensitive,
        "inReplyTo": post.in_reply_to,
        "published": iso_time(post.published),
        "url": post.url or post.uri,
        "to": to,
        "cc": cc,
        "context": post.conversation,
        "conversation": post.conversation,
        "tag": [{"type": "Mention", "href": m["href"], "name": m["name"]} for m in post.mentions]
        + [{"type": "Hashtag", "href": tag_url(t), "name": f"#{t}"} for t in post.hashtags],
        "attachment": [],
    }
    if post.language:
        doc["contentMap"] = {post.language: post.content}
    if post.updated:
        doc["updated"] = iso_time(post.updated)
    return {"@context": NOTE_CONTEXT, **doc} if context else doc


def wrap_activity(kind: str, post: Post, note: dict[str, Any], activity_id: str) -> dict[str, Any]:
    """Create/Update of a local note, addressed like the note."""
    body = {key: value for key, value in note.items() if key != "@context"}
    return {
        "@context": NOTE_CONTEXT,
        "id": activity_id,
        "type": kind,
        "actor": post.author,
        "published": iso_time(post.updated or post.published),
        "to": note["to"],
        "cc": note["cc"],
        "object": body,
    }
