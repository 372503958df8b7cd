"""NodeInfo 2.0 / 2.1 documents and the /.well-known/nodeinfo index, per host."""

from __future__ import annotations

import time
from typing import Any

from microfedi import __version__
from microfedi.domains import Directory
from microfedi.urls import Urls

SCHEMA = "http://nodeinfo.diaspora.software/ns/schema/{version}"
APPLICATION_ACTOR_REL = "https://www.w3.org/ns/activitystreams#Application"
VERSIONS = ("2.0", "2.1")
HOMEPAGE = "https://pypi.org/project/microfedi/"


def well_known(host: str, directory: Directory, urls: Urls) -> dict[str, Any]:
    """The index: links to both schema versions and (FEP-2677) the instance actor."""
    origin = urls.origin(host)
    links = [{"rel": SCHEMA.format(version=v), "href": f"{origin}/nodeinfo/{v}"} for v in VERSIONS]
    links.append({"rel": APPLICATION_ACTOR_REL, "href": urls.instance_actor(directory.actor_host(host))})
    return {"links": links}


def document(
    version: str, host: str, directory: Directory, urls: Urls, local_posts: int, now: float | None = None
) -> dict[str, Any]:
    """NodeInfo for `host`: usage counts cover the accounts this host answers for."""
    now = time.time() if now is None else now
    accounts = directory.accounts_on_host(host)
    software: dict[str, str] = {"name": "microfedi", "version": __version__}
    if version == "2.1":
        software["homepage"] = HOMEPAGE
    active = lambda days: sum(1 for a in accounts if a.updated_at >= now - days * 86400)  # noqa: E731
    return {
        "version": version,
        "software": software,
        "protocols": ["activitypub"],
        "services": {"inbound": [], "outbound": []},
        "openRegistrations": False,
        "usage": {
            "users": {"total": len(accounts), "activeMonth": active(30), "activeHalfyear": active(182)},
            "localPosts": local_posts,
        },
        "metadata": {
            "nodeName": host,
            "domains": sorted({a.domain for a in accounts} | ({host} if host in directory.domains else set())),
            "instanceActor": urls.instance_actor(directory.actor_host(host)),
        },
    }
