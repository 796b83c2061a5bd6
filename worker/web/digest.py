"""The page a digest links to: its leads, each with an Accept button.

``GET /digest/<token>`` shows the leads and changes nothing (mail scanners open links);
``POST /digest/<token>/accept/<assignment>`` accepts one of them, for the person the digest
was sent to, and leads back to the page. The token is signed like an accept link.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from worker.commands.operations import accept_assignment
from worker.pipeline.digest import (
    PURPOSE,
    assignment_of,
    held_lead_facts,
    may_accept,
    verify_digest,
)
from worker.pipeline.notify import _html_env, template_env
from worker.runtime.app import App
from worker.store.models import Assignment, Contact, Message
from worker.web.accept import LinkError


def digest_routes(app: App) -> list[Route]:
    def page(request: Request) -> Response:
        token = request.path_params["token"]
        try:
            digest_id = verify_digest(app.settings, token)
        except LinkError as exc:
            return HTMLResponse(f"<p>{exc}</p>", status_code=403)
        with app.store.session() as session:
            digest, members = _digest(session, digest_id)
            if digest is None:
                return HTMLResponse("<p>This list no longer exists.</p>", status_code=404)
            leads = [held_lead_facts(session, app.config, digest.rep, m) for m in members]
        for lead in leads:
            lead["accept_action"] = f"/digest/{token}/accept/{lead['assignment']}"
        rep = app.config.team.reps.get(digest.rep or "")
        facts = {
            "rep": {"id": digest.rep, "name": rep.name if rep else digest.rep},
            "leads": leads,
            "count": len(leads),
        }
        env = _html_env(template_env(app.config.directory))
        return HTMLResponse(env.get_template("digest_page.html.j2").render(facts))

    def accept(request: Request) -> Response:
        token = request.path_params["token"]
        try:
            digest_id = verify_digest(app.settings, token)
        except LinkError as exc:
            return HTMLResponse(f"<p>{exc}</p>", status_code=403)
        assignment_id = request.path_params["assignment"]
        with app.store.session() as session:
            digest, members = _digest(session, digest_id)
            if digest is None or assignment_id not in {assignment_of(m) for m in members}:
                return HTMLResponse("<p>This lead is not on this list.</p>", status_code=404)
            # The lead before its assignment: the order the SLA clock locks them in.
            contact_id = session.scalar(
                select(Assignment.contact_id).where(Assignment.id == assignment_id)
            )
            contact = session.get(Contact, contact_id, with_for_update=True) if contact_id else None
            assignment = session.get(Assignment, assignment_id, with_for_update=True)
            if assignment is None or contact is None:
                return HTMLResponse("<p>This lead no longer exists.</p>", status_code=404)
            if may_accept(app.config, digest.rep, assignment):
                cause = "accepted from a digest"
                at = datetime.now(UTC)
                accept_assignment(session, app.config, assignment, contact, at, cause, digest.rep)
        # Back to the list, which shows the lead accepted (or why not: taken by another).
        return RedirectResponse(f"/digest/{token}", status_code=303)

    return [
        Route("/digest/{token}", page, methods=["GET"]),
        Route("/digest/{token}/accept/{assignment:int}", accept, methods=["POST"]),
    ]


def _digest(session: Any, digest_id: int) -> tuple[Message | None, list[Message]]:
    digest = session.get(Message, digest_id)
    if digest is None or digest.purpose != PURPOSE:
        return None, []
    members = list(
        session.scalars(
            select(Message).where(Message.digest_key == digest.key).order_by(Message.id)
        )
    )
    return digest, members
