"""WebFinger (RFC 7033) for local accounts: which host answers for whom, and the JRD.

A host answers only for accounts whose handle domain or URL host it is. In the
split set-up Mastodon asks the service host for `acct:<preferredUsername>@<host>`
and expects the subject `acct:alice@alice.example`, then asks the handle domain
for that subject; both answers carry the same `self` link.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from microfedi.domains import Directory
from microfedi.errors import ActionError
from microfedi.store.directory import AccountRow
from microfedi.urls import INSTANCE_ACTOR_PATH, Urls, split_local_url

PROFILE_PAGE = "http://webfinger.net/rel/profile-page"
SUBSCRIBE = "http://ostatus.org/schema/1.0/subscribe"
AS_TYPE = "application/activity+json"


@dataclass(frozen=True)
class Resource:
    """A parsed `resource` parameter: an account address or an http(s) URL."""

    username: str | None = None
    domain: str | None = None
    url_host: str | None = None
    url_path: str | None = None


def parse_resource(raw: str | None) -> Resource:
    if not raw or not raw.strip():
        raise ActionError("the resource parameter is missing; ask for ?resource=acct:user@domain")
    text = raw.strip()
    if text.startswith(("http://", "https://")):
        parts = split_local_url(text)
        if parts is None:
            raise ActionError(f"the resource {raw!r} is not a valid URL")
        return Resource(url_host=parts[0], url_path=parts[1].rstrip("/") or "/")
    address = text[5:] if text.lower().startswith("acct:") else text
    address = address.lstrip("@")
    username, sep, domain = address.rpartition("@")
    if not sep or not username or not domain or "@" in username or "/" in domain:
        raise ActionError(f"the resource {raw!r} is not acct:user@domain or an actor URL")
    return Resource(username=username.lower(), domain=domain.lower().rstrip("."))


@dataclass(frozen=True)
class Subject:
    """Who a resource names: a local account, or the instance actor of a host."""

    account: AccountRow | None = None
    instance_host: str | None = None


def find_subject(directory: Directory, resource: Resource, asked_host: str) -> Subject | None:
    """The local subject `resource` names, if `asked_host` may answer for it."""
    if resource.url_host is not None:
        host, path = resource.url_host, resource.url_path or "/"
        if path == INSTANCE_ACTOR_PATH and host in directory.instance_keys:
            subject = Subject(instance_host=host)
        elif path.startswith("/@") and "/" not in path[2:]:
            account = directory.accounts_by_url.get((host, path[2:].lower()))
            subject = Subject(account=account) if account else None
        else:
            subject = None
    else:
        assert resource.username is not None and resource.domain is not None
        if resource.username == resource.domain and resource.domain in directory.instance_keys:
            subject = Subject(instance_host=resource.domain)
        else:
            account = directory.accounts_by_handle.get((resource.username, resource.domain))
            if account is None:  # the preferredUsername@URL-host form of the round trip
                account = directory.accounts_by_url.get((resource.domain, resource.username))
            subject = Subject(account=account) if account else None
    if subject is None:
        return None
    if subject.account is not None:
        allowed = asked_host in (subject.account.domain, subject.account.host)
    else:
        allowed = asked_host == subject.instance_host
    return subject if allowed else None


def jrd(subject: Subject, urls: Urls, rels: list[str] | None = None) -> dict[str, Any]:
    """The JSON Resource Descriptor for a subject, links filtered by `rel` if asked."""
    if subject.account is not None:
        account = subject.account
        actor = urls.actor(account)
        doc_subject = f"acct:{account.username}@{account.domain}"
        host = account.host
    else:
        assert subject.instance_host is not None
        host = subject.instance_host
        actor = urls.instance_actor(host)
        doc_subject = f"acct:{host}@{host}"
    links: list[dict[str, str]] = [
        {"rel": "self", "type": AS_TYPE, "href": actor},
        {"rel": PROFILE_PAGE, "type": "text/html", "href": actor if subject.account else urls.origin(host) + "/about"},
        {"rel": SUBSCRIBE, "template": urls.subscribe_template(host)},
    ]
    if rels:
        links = [link for link in links if link["rel"] in rels]
    return {"subject": doc_subject, "aliases": [actor], "links": links}
