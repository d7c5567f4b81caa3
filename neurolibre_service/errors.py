"""Errors a user can act on: each carries the HTTP status it maps to and a clear message."""


class UserError(Exception):
    status = 400

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status


class NotFound(UserError):
    status = 404


class Conflict(UserError):
    status = 409
