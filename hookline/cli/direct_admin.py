"""The direct mode's publish and tenant commands (see `direct.py`): the services the
admin routes and `POST /v1/events` call, answered in the routes' shapes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from hookline.api.errors import problems
from hookline.api.routes.tenants import key_out
from hookline.api.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyList, TenantCreated
from hookline.cli.remote import RemoteError
from hookline.runtime import Runtime, command_transport
from hookline.services import tenants
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
    """`body` read by the route's own schema, refused as the route would refuse it."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise refused("validation_error", problems(exc.errors())) from None


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

    @staticmethod
    def _service(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except ServiceError as exc:
            raise refused(exc.code, exc.message, 404 if exc.code == "not_found" else 422) from None
