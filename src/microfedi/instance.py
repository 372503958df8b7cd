"""The running install: settings, the database and the directory, opened once.

The CLI and the HTTP app both work through an `Instance`, so every action has
one implementation whichever door it came in by.
"""

from __future__ import annotations

from microfedi.config import Settings
from microfedi.domains import DirectoryCache, ensure_all_instance_actors
from microfedi.store.database import Database
from microfedi.urls import Urls


class Instance:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database_path)
        self.urls = Urls(settings)
        self._directory: DirectoryCache | None = None

    @property
    def directory(self) -> DirectoryCache:
        if self._directory is None:
            raise RuntimeError("instance is not open")
        return self._directory

    async def open(self) -> None:
        self.db.open()
        await ensure_all_instance_actors(self.db)
        self._directory = DirectoryCache(self.db)

    async def close(self) -> None:
        if self._directory is not None:
            self._directory.close()
            self._directory = None
        self.db.close()
