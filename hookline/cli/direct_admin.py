"""The direct mode's publish and tenant commands (see `direct.py`): the services the
admin routes and `POST /v1/events` call, answered in the routes' shapes."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

from pydantic import BaseModel, ValidationError
from sqlalchemy import select

from common.db.models import Tenant
from common.ssrf import system_resolver
from hookline.api.cursor import oldest_first
from hookline.api.deps import Services
from hookline.api.errors import ApiError, problems
from hookline.api.limit_schemas import LimitOverrides
from hookline.api.routes.subscriptions import created_or_existing, to_out
from hookline.api.routes.tenant_limits import limits_out
from hookline.api.routes.tenants import key_out
from hookline.api.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    TenantCreated,
    TenantList,
    TenantOut,
)
from hookline.api.subscription_schemas import (
    AdminSubscriptionCreate,
    SubscriptionCreate,
    SubscriptionUpdate,
)
from hookline.cli.remote import RemoteError
from hookline.runtime import Runtime, command_transport
from hookline.services import limits, subscriptions, tenants
from hookline.services import subscription_actions as actions
from hookline.services.audit import CLI, Actor
from hookline.services.errors import ServiceError

Json = dict[str, Any]
SHELL = Actor(CLI)


def refused(code: str, message: str, status: int = 422) -> RemoteError:
    """A direct-mode refusal, worded and printed as the API's would be."""
    return RemoteError(status, code, message)


def as_json(model: BaseModel) -> Json:
    return model.model_dump(mode="json")


def valid(model: type[BaseModel], body: Json) -> Any:
    """`body` read by the route's own schema, refused in the route's words (which name a
    bad field `body.<field>`)."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        where = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        raise refused("validation_error", problems(where)) from None


def _owner(tenant_id: str | None) -> str:
    if tenant_id is None:
        raise refused("validation_error", "--tenant is required without HOOKLINE_API_URL")
    return tenant_id


class DirectAdmin:
    """Publishing and tenant management on this deployment's broker and database."""

    rt: Runtime

    def publish(self, event: Json, tenant: str | None) -> Json:
        from producer import InvalidEvent, Producer

        if tenant is None:
            raise refused("validation_error", "--tenant is required without HOOKLINE_API_URL")
        settings = self.rt.settings
        with (
            command_transport(settings) as transport,
            Producer(settings, transport=transport) as producer,
        ):
            try:
                published = producer.publish(
                    event["type"], event["data"], tenant=tenant,
                    id=event.get("id"), operation=event.get("operation"),
                )  # fmt: skip
                return {"id": published}
            except InvalidEvent as exc:
                raise refused("invalid_event", str(exc)) from None

    def create_tenant(self, name: str) -> Json:
        with self.rt.sessionmaker() as session, session.begin():
            tenant, key = tenants.create_tenant(session, name, actor=SHELL)
            return as_json(TenantCreated(id=tenant.id, name=tenant.name, api_key=key))

    def tenants(self, limit: int, cursor: str | None) -> Json:
        with self.rt.sessionmaker() as session:
            try:
                page, after = oldest_first(session, select(Tenant), Tenant, limit, cursor)
            except ApiError as exc:  # a cursor that is not one
                raise refused(exc.code, exc.message) from None
            shown = [TenantOut(id=t.id, name=t.name, created_at=t.created_at) for t in page]
        return as_json(TenantList(data=shown, next_cursor=after))

    def issue_key(self, tenant_id: str, body: Json) -> Json:
        spec: ApiKeyCreate = valid(ApiKeyCreate, body)
        with self.rt.sessionmaker() as session, session.begin():
            row, key = self._service(
                lambda: tenants.issue_key(session, tenant_id, spec, actor=SHELL)
            )
            return as_json(ApiKeyCreated(**key_out(row).model_dump(), api_key=key))

    def keys(self, tenant_id: str) -> Json:
        with self.rt.sessionmaker() as session:
            self._service(lambda: tenants.get(session, tenant_id))
            rows = tenants.list_keys(session, tenant_id)
            return as_json(ApiKeyList(data=[key_out(r) for r in rows], next_cursor=None))

    def revoke_key(self, tenant_id: str, key_id: str) -> Json:
        with self.rt.sessionmaker() as session, session.begin():
            row = self._service(lambda: tenants.revoke_key(session, tenant_id, key_id, actor=SHELL))
            return as_json(key_out(row))

    def limits(self, tenant_id: str) -> Json:
        with self.rt.sessionmaker() as session:
            row = self._service(lambda: limits.read(session, tenant_id))
            return as_json(limits_out(tenant_id, row, self.rt.settings))

    def change_limits(self, tenant_id: str, body: Json) -> Json:
        """As `PATCH /v1/tenants/{id}/limits`: the names present change (null: the default)."""
        changes = valid(LimitOverrides, body).model_dump(exclude_unset=True)
        with self.rt.sessionmaker() as session, session.begin():
            row = self._service(lambda: limits.change(session, tenant_id, changes, actor=SHELL))
            return as_json(limits_out(tenant_id, row, self.rt.settings))

    def subscriptions(self, tenant_id: str | None) -> Json:
        owner = _owner(tenant_id)
        with self.rt.sessionmaker() as session:
            rows = session.scalars(subscriptions.of_tenant(owner, None)).all()
            shown = [as_json(to_out(row, self._services())) for row in rows]
        return {"data": shown, "next_cursor": None}

    def subscribe(self, tenant_id: str | None, body: Json) -> Json:
        """Registered by the operator, as `POST /v1/tenants/{id}/subscriptions` does:
        active without a handshake unless `verify`."""
        spec: AdminSubscriptionCreate = valid(AdminSubscriptionCreate, body)
        fields = spec.model_dump(exclude={"verify"})
        owner = _owner(tenant_id)
        services = self._services()
        with self.rt.sessionmaker() as session:
            self._service(lambda: tenants.get(session, owner))
        answer = self._service(
            lambda: created_or_existing(
                services, owner, SubscriptionCreate(**fields), actor=SHELL,
                verified=not spec.verify,
            )
        )  # fmt: skip
        return dict(json.loads(answer.body))

    def subscription_action(self, tenant_id: str | None, sub_id: str, action: str) -> Json:
        move = {"pause": actions.pause, "resume": actions.resume}[action]
        with self.rt.sessionmaker() as session, session.begin():
            row = self._service(lambda: move(session, _owner(tenant_id), sub_id, actor=SHELL))
            return as_json(to_out(row, self._services()))

    def change_subscription(self, tenant_id: str | None, sub_id: str, body: Json) -> Json:
        """As `PATCH /v1/subscriptions/{id}`: the fields present change."""
        changes = valid(SubscriptionUpdate, body).model_dump(exclude_unset=True)
        rt = self.rt
        outbound = subscriptions.Outbound(rt.settings, system_resolver, rt.secret_box)
        row = self._service(
            lambda: subscriptions.change(
                rt.sessionmaker, _owner(tenant_id), sub_id, changes,
                actor=SHELL, outbound=outbound,
            )
        )  # fmt: skip
        return as_json(to_out(row, self._services()))

    def unsubscribe(self, tenant_id: str | None, sub_id: str) -> None:
        with self.rt.sessionmaker() as session, session.begin():
            owner = _owner(tenant_id)
            self._service(lambda: subscriptions.delete(session, owner, sub_id, actor=SHELL))

    def _services(self) -> Services:
        """What the routes' helpers read (the secret box, the outbound settings)."""
        return cast(Services, SimpleNamespace(
            settings=self.rt.settings, secret_box=self.rt.secret_box, resolver=system_resolver,
            sessionmaker=self.rt.sessionmaker,
        ))  # fmt: skip

    @staticmethod
    def _service(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except ServiceError as exc:
            raise refused(exc.code, exc.message, 404 if exc.code == "not_found" else 422) from None
