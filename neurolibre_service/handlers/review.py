"""Submit, screen, review: the pages and JSON API of the editorial workflow (publishing.py).

Roles come from hub scopes: editors hold custom:neurolibre:review (admins, custom:neurolibre:admin,
act as editors too); reviewers are the hub users an editor assigned to a preprint; the author is
the preprint's owner. Anyone else gets "No preprint N", as for any preprint that is not theirs.

The preprint page (`preprints/{id}`) is served from here: its author (and admins) get the page
they had, with the review added; editors and assigned reviewers get the review page (the build
under review, its preview, the review), not the author's controls.
"""

from __future__ import annotations

from tornado import web

from .. import REVIEW_SCOPE
from ..errors import UserError
from ..publishing import MAX_COMMENT, Actor
from .base import APIHandler, BaseHandler, page_args, row_id
from .preprints import PreprintPage as AuthorsPreprintPage


def is_editor(handler: BaseHandler) -> bool:
    user = handler.current_user
    return bool(user) and REVIEW_SCOPE in user.get("scopes", ())


def actor(handler: BaseHandler) -> Actor:
    return Actor(handler.current_user["name"], editor=is_editor(handler), admin=handler.is_admin)


def _text(body: dict, key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise UserError(f"{key} must be a string.")
    return value


class PreprintPage(AuthorsPreprintPage):
    @web.authenticated
    async def get(self, preprint_id: str) -> None:
        ident = row_id(preprint_id, "preprint")
        who = actor(self)
        review = await self.nl.publishing.review(ident, who)  # NotFound unless one may see it
        pm = self.nl.preprints
        p, builds = await pm.get(ident, who.name, True)
        preprint = pm.to_dict(p, builds=builds)
        if review["role"] == "author" or self.is_admin:
            self.render_template("preprint.html", preprint=preprint, review=review,
                                 max_comment=MAX_COMMENT)  # fmt: skip
            return
        under_review = next((b for b in preprint["builds"] if b["id"] == review["build"]), None)
        self.render_template("review.html", preprint=preprint, review=review,
                             build=under_review, max_comment=MAX_COMMENT)  # fmt: skip


class ReviewsPage(BaseHandler):
    """Editors: the queue; reviewers: what they review; authors: their submissions."""

    @web.authenticated
    async def get(self) -> None:
        status = self.get_argument("status", "")
        items, total = await self.nl.publishing.queue(actor(self), status, limit=1000)
        self.render_template("reviews.html", items=items, total=total, status=status,
                             is_editor=is_editor(self) or self.is_admin)  # fmt: skip


class ReviewsAPI(APIHandler):
    async def get(self) -> None:
        self.require_user()
        limit, offset = page_args(self)
        items, total = await self.nl.publishing.queue(
            actor(self), self.get_argument("status", ""), limit=limit, offset=offset
        )
        self.write_page(items, total, limit, offset, "api/reviews")


class ReviewAPI(APIHandler):
    async def get(self, preprint_id: str) -> None:
        self.require_user()
        ident = row_id(preprint_id, "preprint")
        self.write_json(await self.nl.publishing.review(ident, actor(self)))


class SubmitAPI(APIHandler):
    async def post(self, preprint_id: str) -> None:
        """The author submits the preprint's latest build (it must have succeeded)."""
        self.require_user()
        ident = row_id(preprint_id, "preprint")
        body = self.body()
        self.write_json(await self.nl.publishing.submit(ident, actor(self), _text(body, "comment")))


class WithdrawAPI(APIHandler):
    async def post(self, preprint_id: str) -> None:
        self.require_user()
        ident = row_id(preprint_id, "preprint")
        body = self.body()
        review = await self.nl.publishing.withdraw(ident, actor(self), _text(body, "comment"))
        self.write_json(review)


class ReviewersAPI(APIHandler):
    async def post(self, preprint_id: str) -> None:
        """An editor assigns a reviewer (a hub user; an email address is optional)."""
        self.require_user()
        ident = row_id(preprint_id, "preprint")
        body = self.body()
        review = await self.nl.publishing.assign(ident, actor(self), _text(body, "reviewer") or "",
                                                 _text(body, "email"))  # fmt: skip
        self.write_json(review, status=201)


class ReviewerAPI(APIHandler):
    async def delete(self, preprint_id: str, reviewer: str) -> None:
        self.require_user()
        ident = row_id(preprint_id, "preprint")
        self.write_json(await self.nl.publishing.unassign(ident, actor(self), reviewer))


class DecisionAPI(APIHandler):
    async def post(self, preprint_id: str) -> None:
        """An editor screens, requests changes, accepts (which publishes) or rejects."""
        self.require_user()
        ident = row_id(preprint_id, "preprint")
        body = self.body()
        review = await self.nl.publishing.decide(ident, actor(self), _text(body, "decision") or "",
                                                 _text(body, "comment"))  # fmt: skip
        self.write_json(review)


class CommentsAPI(APIHandler):
    async def post(self, preprint_id: str) -> None:
        """The author, an editor or an assigned reviewer comments (or answers a comment)."""
        self.require_user()
        ident = row_id(preprint_id, "preprint")
        body = self.body()
        reply_to = body.get("reply_to")
        if reply_to is not None and (isinstance(reply_to, bool) or not isinstance(reply_to, int)):
            raise UserError("reply_to must be the number of a comment.")
        review = await self.nl.publishing.comment(ident, actor(self), _text(body, "comment"),
                                                  reply_to)  # fmt: skip
        self.write_json(review, status=201)
