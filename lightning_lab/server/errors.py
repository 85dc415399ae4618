"""``RequestError``: a request the server extension refuses, with the HTTP status and a message for the user."""

from __future__ import annotations


class RequestError(Exception):
    """A 4xx answer: ``status`` and a message saying what was wrong with the request and how to fix it.

    The core modules of :mod:`lightning_lab.server` raise it without knowing about tornado; the
    handlers turn it into a JSON reply ``{"message": ...}``.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
