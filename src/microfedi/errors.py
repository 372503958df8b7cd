"""The error a person can act on: bad input to an action, said in one line."""

from __future__ import annotations


class ActionError(Exception):
    """Refused input. The CLI prints the message and exits 1; HTTP answers 4xx.

    `status` is the HTTP status the web layer should use.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
