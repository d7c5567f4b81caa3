"""Handler base classes: hub OAuth identity, roles from scopes, JSON errors, metrics."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from jupyterhub.services.auth import HubOAuthenticated, UserNotAllowed
from tornado import web

from .. import ADMIN_SCOPE
from ..errors import NotFound, UserError

if TYPE_CHECKING:
    from ..app import NeuroLibre

#: ids are SQL `integer` columns, 32-bit on PostgreSQL: a larger number names nothing, and must
#: not reach the drivers (asyncpg refuses it past 32 bits, SQLite with OverflowError past 64)
MAX_ID = 2**31 - 1


def row_id(raw: str, what: str) -> int:
    """The id in a URL (a route's digits): a number that can name a row, else "No {what} N."."""
    # only 0-9: isdigit() and int() also take other scripts' digits ("\u0661" is 1)
    if raw.isascii() and raw.isdigit() and int(raw) <= MAX_ID:
        return int(raw)
    raise NotFound(f"No {what} {raw}.")


def allowed_methods(handler: type[web.RequestHandler]) -> list[str]:
    """The HTTP methods a handler class implements (tornado's defaults answer 405)."""
    return [m for m in handler.SUPPORTED_METHODS
            if getattr(handler, m.lower()) is not getattr(web.RequestHandler, m.lower())]  # fmt: skip


class AllowOn405:
    """A 405 answer says which methods the resource has (RFC 9110 requires Allow)."""

    def set_allow(self, status_code: int) -> None:
        if status_code == 405:
            self.set_header("Allow", ", ".join(allowed_methods(type(self))))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_allow(status_code)
        super().write_error(status_code, **kwargs)


class BaseHandler(AllowOn405, HubOAuthenticated, web.RequestHandler):
    #: handlers that anyone may call (health, openapi) skip the hub look-up
    public = False

    @property
    def nl(self) -> NeuroLibre:
        return self.settings["neurolibre"]

    async def prepare(self) -> None:
        self.check_path_args()
        self._forbidden = None
        self._hub_auth_user_cache = None
        if self.public:
            return
        # HubOAuth checks XSRF for cookie-authenticated writes here: a forged POST
        # gets no user, so it is refused like an anonymous one.
        model = await self.hub_auth.get_user(self, sync=False)
        if model:
            try:
                self._hub_auth_user_cache = self.check_hub_user(model)
            except UserNotAllowed:
                self._forbidden = model.get("name")

    def check_path_args(self) -> None:
        # a NUL reaching a file system call raises ValueError (a 500): refuse it up front
        if any("\x00" in arg for arg in self.path_args if arg):
            raise web.HTTPError(400, "The URL contains a NUL character (%00).")

    def require_login(self) -> bool:
        """@web.authenticated for part of a handler method: False once an anonymous reader was
        sent to the login page (or refused, for writes)."""
        if self.current_user:
            return True
        web.authenticated(lambda _handler: None)(self)
        return False

    @property
    def user_name(self) -> str:
        return self.current_user["name"]

    @property
    def is_admin(self) -> bool:
        user = self.current_user
        return bool(user) and ADMIN_SCOPE in user.get("scopes", ())

    def on_finish(self) -> None:
        handler = type(self).__name__
        self.nl.metrics.requests.labels(
            method=self.request.method, handler=handler, code=str(self.get_status())
        ).observe(self.request.request_time())

    def render_template(self, name: str, **ns: Any) -> None:
        ns.update(
            base_url=self.nl.base_url,
            static_url=self.static_url,
            user=self.current_user,
            is_admin=self.is_admin,
            xsrf_token=self.xsrf_token.decode("ascii"),
            hub_url=self.nl.hub_prefix,
        )
        self.finish(self.nl.templates.get_template(name).render(**ns))

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, UserError):
            return
        super().log_exception(typ, value, tb)

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, UserError):
            self.send_error(e.status, exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_allow(status_code)
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = _message(status_code, exc)
        self.render_template("error.html", status_code=status_code, message=message)


class APIHandler(BaseHandler):
    def get_login_url(self) -> str:
        # an API answers, it does not redirect a script to a login page
        raise web.HTTPError(403)

    def require_user(self) -> dict:
        if self.current_user is None:
            if self._forbidden:
                raise web.HTTPError(
                    403, f"{self._forbidden} may not use this service (missing scope "
                    "access:services!service=neurolibre)."
                )  # fmt: skip
            raise web.HTTPError(
                403, "Authentication required: log in through the hub, or send "
                "'Authorization: token <hub API token>'. Cookie-authenticated writes need "
                "the X-XSRFToken header."
            )  # fmt: skip
        return self.current_user

    def require_admin(self) -> dict:
        user = self.require_user()
        if not self.is_admin:
            raise web.HTTPError(403, f"This needs the {ADMIN_SCOPE} scope.")
        return user

    def body(self) -> dict:
        ctype = self.request.headers.get("Content-Type", "")
        if ctype.startswith("application/json"):
            try:
                data = json.loads(self.request.body or b"{}")
            except ValueError:
                raise UserError("The request body is not valid JSON.") from None
            if not isinstance(data, dict):
                raise UserError("The request body must be a JSON object.")
            if _has_nul(data):
                # PostgreSQL text cannot hold it, and no name, URL or address contains one
                raise UserError("The request body contains a NUL character (\\u0000).")
            return data
        return {k: self.get_body_argument(k) for k in self.request.body_arguments}

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(data))

    def write_page(self, items: list, total: int, limit: int, offset: int, path: str) -> None:
        """One page of a listing, with its total and a link to the next page."""
        self.set_header("X-Total-Count", str(total))
        if offset + limit < total:
            query = urlencode({"limit": limit, "offset": offset + limit})
            self.set_header("Link", f'<{self.nl.base_url}{path}?{query}>; rel="next"')
        self.write_json(items)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_allow(status_code)
        exc = kwargs.get("exc_info", (None, None, None))[1]
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"status": status_code, "message": _message(status_code, exc)}))


PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page_args(handler: web.RequestHandler) -> tuple[int, int]:
    """limit and offset of a listing, checked."""
    try:
        limit = int(handler.get_argument("limit", str(PAGE_SIZE)))
        offset = int(handler.get_argument("offset", "0"))
    except ValueError:
        raise UserError("limit and offset must be whole numbers.") from None
    if not 1 <= limit <= MAX_PAGE_SIZE or not 0 <= offset <= MAX_ID:
        raise UserError(f"limit must be 1-{MAX_PAGE_SIZE} and offset 0-{MAX_ID}.")
    return limit, offset


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _message(status_code: int, exc: BaseException | None) -> str:
    if isinstance(exc, UserError):
        return str(exc)
    if isinstance(exc, web.HTTPError) and exc.log_message:
        return exc.log_message % exc.args if exc.args else exc.log_message
    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return "Error"


class UnknownPath(APIHandler):
    """What no route matches (tornado's default_handler_class): a 404 for any method, in JSON
    under api/ (like every API error), else the error page."""

    public = True

    async def prepare(self) -> None:
        await super().prepare()
        raise web.HTTPError(404, "Nothing here; api/openapi.json lists the API's paths.")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if self.request.path.startswith(f"{self.nl.base_url}api/"):
            super().write_error(status_code, **kwargs)
        else:
            BaseHandler.write_error(self, status_code, **kwargs)
