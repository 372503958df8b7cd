"""microfedi: a small multi-domain ActivityPub server on one SQLite file."""

__version__ = "0.1.0"
