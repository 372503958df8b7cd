"""The running install: settings, the database, the directory and the HTTP client.

The CLI and the HTTP app both work through an `Instance`, so every action has
one implementation whichever door it came in by.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from microfedi.config import Settings
from microfedi.domains import Directory, DirectoryCache, ensure_all_instance_actors
from microfedi.federation.keys import load_private_key
from microfedi.federation.remote import KeyCache
from microfedi.store import directory as q
from microfedi.store.database import Database
from microfedi.store.directory import AccountRow
from microfedi.urls import Urls, split_local_url

if TYPE_CHECKING:
    from microfedi.federation.delivery import ActivityCache
    from microfedi.federation.delivery_client import DeliveryClient
    from microfedi.federation.http import FederationClient, Signer


class Instance:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database_path)
        self.urls = Urls(settings)
        self._directory: DirectoryCache | None = None
        self._http: FederationClient | None = None
        self._deliveries: DeliveryClient | None = None
        self._signers: dict[tuple[str, object], Signer] = {}
        self.activity_cache: ActivityCache | None = None
        self.keys = KeyCache()
        self.runner = None  # set by the app's lifespan: the task runner

    @property
    def directory(self) -> DirectoryCache:
        if self._directory is None:
            raise RuntimeError("instance is not open")
        return self._directory

    @property
    def http(self) -> FederationClient:
        if self._http is None:
            from microfedi.federation.http import FederationClient

            self._http = FederationClient(self.settings)
        return self._http

    @property
    def deliveries(self) -> DeliveryClient:
        """The client that POSTs deliveries to inboxes (kept-alive connections per host)."""
        if self._deliveries is None:
            from microfedi.federation.delivery_client import DeliveryClient

            self._deliveries = DeliveryClient(self.settings)
        return self._deliveries

    async def open(self) -> None:
        from microfedi.federation.delivery import ActivityCache

        self.db.open()
        await ensure_all_instance_actors(self.db)
        self._directory = DirectoryCache(self.db)
        self.activity_cache = ActivityCache()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._deliveries is not None:
            await self._deliveries.aclose()
            self._deliveries = None
        if self._directory is not None:
            self._directory.close()
            self._directory = None
        self.db.close()

    def wake_tasks(self) -> None:
        """Nudge the in-process task runner (a no-op in the CLI, whose tasks the server polls)."""
        if self.runner is not None:
            self.runner.wake()

    # ---------------------------------------------------------- local lookups

    def snapshot(self) -> Directory:
        return self.directory.current()

    def _derived(self, key: str, build: Any) -> Any:
        """`build(snapshot)`, kept until the directory changes (these sit on hot paths)."""
        snapshot = self.snapshot()
        cache = self.directory.derived
        if key not in cache:
            cache[key] = build(snapshot)
        return cache[key]

    def local_hosts(self) -> set[str]:
        """Hosts whose actor URLs this server serves."""
        return self._derived("local_hosts", lambda d: {h for h, view in d.hosts.items() if view.serves_actors})

    def local_account_by_reference(self, reference: str) -> AccountRow | None:
        """A live local account named by actor URL or by `user@domain`."""
        snapshot = self.snapshot()
        parts = split_local_url(reference)
        if parts is not None:
            host, path = parts
            if path.startswith("/@") and "/" not in path[2:]:
                return snapshot.accounts_by_url.get((host, path[2:].lower()))
            return None
        username, sep, domain = reference.strip().removeprefix("acct:").lstrip("@").partition("@")
        if not sep:
            return None
        return snapshot.accounts_by_handle.get((username.lower(), domain.lower()))

    def local_account_uris(self) -> dict[str, AccountRow]:
        """Actor URI → live local account."""
        return self._derived("account_uris", lambda d: {self.urls.actor(a): a for a in d.accounts_by_url.values()})

    def local_inboxes(self) -> dict[str, str]:
        """Actor URI → inbox URL of every live local account."""
        return {uri: self.urls.inbox(a) for uri, a in self.local_account_uris().items()}

    def account_for_inbox(self, inbox_url: str) -> int | None:
        """The local account whose personal inbox this is; None for a shared inbox."""
        if inbox_url.endswith("/inbox"):
            account = self.local_account_by_reference(inbox_url[: -len("/inbox")])
            return account.id if account else None
        return None

    # ---------------------------------------------------------- signing keys

    async def account_signer(self, account_id: int) -> Signer:
        """The Signer of a local account (key loaded once per process)."""
        from microfedi.federation.http import Signer

        key = ("account", account_id)
        if key not in self._signers:
            pem = await self.db.read(q.account_private_key_pem, account_id)
            account = await self.db.read(q.get_account_by_id, account_id)
            self._signers[key] = Signer(self.urls.key_id(account), load_private_key(pem))
        return self._signers[key]

    async def instance_signer(self, host: str | None = None) -> Signer:
        """The Signer of a host's instance actor (any local host's when None)."""
        from microfedi.federation.http import Signer

        if host is None or host not in self.snapshot().instance_keys:
            hosts = sorted(self.snapshot().instance_keys)
            if not hosts:
                raise RuntimeError("no local domain yet: add one with `microfedi domain add`")
            host = hosts[0]
        key = ("instance", host)
        if key not in self._signers:
            pem = await self.db.read(q.instance_actor_private_key_pem, host)
            self._signers[key] = Signer(self.urls.instance_key_id(host), load_private_key(pem))
        return self._signers[key]
