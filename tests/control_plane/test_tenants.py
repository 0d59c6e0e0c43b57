"""`hookline.services.tenants` where no route test reaches: the audit rows of the shell
(`hookline tenant ...`), which differ from the admin routes' and stay as they were."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import AuditEntry
from hookline.api.schemas import ApiKeyCreate
from hookline.services import tenants
from hookline.services.audit import ADMIN, CLI, Actor


def test_the_shell_audits_key_scopes_alone_and_not_the_tenant_it_creates(
    sessions: sessionmaker[Session],
) -> None:
    spec = ApiKeyCreate(scopes=["events:write"], allowed_cidrs=["10.0.0.0/8"])
    with sessions() as session, session.begin():
        by_shell, _ = tenants.create_tenant(session, "shell", actor=Actor(CLI))
        tenants.issue_key(session, by_shell.id, spec, actor=Actor(CLI))
        by_admin, _ = tenants.create_tenant(session, "admin", actor=Actor(ADMIN, "10.1.2.3"))
        tenants.issue_key(session, by_admin.id, spec, actor=Actor(ADMIN, "10.1.2.3"))

    with sessions() as session:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
        seen = {(r.actor, r.action): (r.details, r.source_ip) for r in rows}
    assert seen == {
        (CLI, "api_key.created"): ({"scopes": ["events:write"]}, None),
        (ADMIN, "tenant.created"): ({"name": "admin"}, "10.1.2.3"),
        (ADMIN, "api_key.created"): (
            {"scopes": ["events:write"], "allowed_cidrs": ["10.0.0.0/8"]},
            "10.1.2.3",
        ),
    }
