"""The URLs we mint for local actors and objects, and reading them back.

Actor and object URLs live on the account's URL host (the service domain, or
the domain itself): `https://host/@alice`, `https://host/@alice/inbox`, ...
"""

from __future__ import annotations

from urllib.parse import urlsplit

from microfedi.config import Settings
from microfedi.store.directory import AccountRow

INSTANCE_ACTOR_PATH = "/actor"


class Urls:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def origin(self, host: str) -> str:
        return self.settings.origin(host)

    def actor(self, account: AccountRow) -> str:
        return f"{self.origin(account.host)}/@{account.username}"

    def key_id(self, account: AccountRow) -> str:
        return self.actor(account) + "#main-key"

    def inbox(self, account: AccountRow) -> str:
        return self.actor(account) + "/inbox"

    def outbox(self, account: AccountRow) -> str:
        return self.actor(account) + "/outbox"

    def followers(self, account: AccountRow) -> str:
        return self.actor(account) + "/followers"

    def following(self, account: AccountRow) -> str:
        return self.actor(account) + "/following"

    def featured(self, account: AccountRow) -> str:
        return self.actor(account) + "/featured"

    def shared_inbox(self, host: str) -> str:
        return f"{self.origin(host)}/inbox"

    def instance_actor(self, host: str) -> str:
        return self.origin(host) + INSTANCE_ACTOR_PATH

    def instance_key_id(self, host: str) -> str:
        return self.instance_actor(host) + "#main-key"

    def webfinger_template(self, host: str) -> str:
        return f"{self.origin(host)}/.well-known/webfinger?resource={{uri}}"

    def subscribe_template(self, host: str) -> str:
        return f"{self.origin(host)}/authorize_interaction?uri={{uri}}"


def split_local_url(url: str) -> tuple[str, str] | None:
    """(host, path) of an http(s) URL, host lower-cased and without port; None if not a URL."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.hostname.lower(), parts.path or "/"
