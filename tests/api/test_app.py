"""The application as a whole: one error shape everywhere, and an OpenAPI that tells the
truth about every route.
"""

from __future__ import annotations

from common.db.session import make_engine, make_sessionmaker
from hookline.api.served import API_ROUTES as IDEMPOTENT
from tests.api.support import Api, assert_error, served_routes

ERROR_REF = "#/components/schemas/ErrorResponse"


def test_an_unknown_route_is_a_json_404(api):
    message = assert_error(api.client.get("/v1/nothing-here"), 404, "not_found")

    assert "/v1/nothing-here" in message


def test_a_wrong_method_is_a_json_405_that_says_what_is_allowed(api):
    response = api.client.put("/v1/events", json={})

    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, POST"  # the list, and ingest


def test_an_unexpected_failure_is_a_json_500_without_details(make_api):
    api = make_api(raise_server_exceptions=False)

    def explode() -> None:
        raise RuntimeError("secret-detail-from-deep-inside")

    api.app.add_api_route("/explode", explode)

    response = api.client.get("/explode")

    assert_error(response, 500, "internal")
    assert "secret-detail" not in response.text


def test_an_unreachable_database_is_a_503_not_a_500(make_api, tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/absent/dir/hookline.db")
    api = make_api(sessionmaker=make_sessionmaker(engine))

    key = "hl_" + "x" * 32  # of a key's form, so it is looked up
    response = api.client.get("/v1/subscriptions", headers={"Authorization": f"Bearer {key}"})

    assert_error(response, 503, "database_unavailable")
    assert str(tmp_path) not in response.text
    engine.dispose()


def app_routes(api: Api) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, as the app itself lists them."""
    return {
        (method.lower(), route.path)
        for route in served_routes(api.app)
        for method in route.methods or ()
    }


def test_openapi_describes_every_route_the_app_serves_with_our_error_shape(api):
    spec = api.client.get("/openapi.json").json()

    described = {(method, path) for path, ops in spec["paths"].items() for method in ops}
    assert described == app_routes(api)
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            statuses = set(op["responses"])
            if op.get("security"):
                assert {"401", "403"} <= statuses, (method, path)
            if "{" in path:
                assert "404" in statuses, (method, path)
            if method == "post":
                assert {"409", "422"} <= statuses, (method, path)
                names = [p["name"] for p in op.get("parameters", [])]
                assert "Idempotency-Key" in names, (method, path)
                assert path.startswith(IDEMPOTENT), path  # where the key is honoured
            if "requestBody" in op:
                assert {"413", "422"} <= statuses, (method, path)
            for status, response in op["responses"].items():
                if status.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": ERROR_REF}, (method, path, status)
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_openapi_lists_the_control_plane_routes(api):
    routes = app_routes(api)

    for route in [
        ("post", "/v1/tenants"), ("get", "/v1/tenants"), ("get", "/v1/tenants/{tenant_id}"),
        ("post", "/v1/tenants/{tenant_id}/api-keys"), ("get", "/v1/tenants/{tenant_id}/api-keys"),
        ("delete", "/v1/tenants/{tenant_id}/api-keys/{key_id}"),
        ("post", "/v1/tenants/{tenant_id}/subscriptions"), ("get", "/v1/audit-log"),
        ("post", "/v1/subscriptions"), ("get", "/v1/subscriptions"),
        ("get", "/v1/subscriptions/{subscription_id}"),
        ("patch", "/v1/subscriptions/{subscription_id}"),
        ("delete", "/v1/subscriptions/{subscription_id}"),
        ("post", "/v1/subscriptions/{subscription_id}/pause"),
        ("post", "/v1/subscriptions/{subscription_id}/resume"),
        ("post", "/v1/subscriptions/{subscription_id}/verify"),
        ("post", "/v1/subscriptions/{subscription_id}/rotate-secret"),
        ("get", "/v1/subscriptions/{subscription_id}/secret"),
        ("get", "/v1/subscriptions/{subscription_id}/public-key"),
        ("post", "/v1/events"), ("post", "/v1/events/batch"), ("get", "/v1/events/{event_id}"),
        ("get", "/v1/deliveries"), ("get", "/v1/deliveries/{delivery_id}"),
    ]:  # fmt: skip
        assert route in routes


def test_openapi_names_the_success_bodies_and_the_credentials(api):
    spec = api.client.get("/openapi.json").json()
    paths = spec["paths"]

    def body_ref(path: str, method: str, status: str) -> str:
        content = paths[path][method]["responses"][status]["content"]
        ref: str = content["application/json"]["schema"]["$ref"]
        return ref.rsplit("/", 1)[-1]

    assert body_ref("/v1/events", "post", "202") == "EventAccepted"
    assert body_ref("/v1/subscriptions", "post", "201") == "SubscriptionCreated"
    assert body_ref("/v1/subscriptions", "post", "200") == "SubscriptionOut"
    assert body_ref("/v1/subscriptions", "get", "200") == "SubscriptionList"
    assert body_ref("/v1/deliveries/{delivery_id}", "get", "200") == "DeliveryOut"
    assert body_ref("/v1/tenants", "post", "201") == "TenantCreated"
    assert body_ref("/v1/tenants/{tenant_id}/api-keys", "post", "201") == "ApiKeyCreated"
    assert paths["/v1/events"]["post"]["security"] == [{"ApiKey": []}]
    assert paths["/v1/tenants"]["post"]["security"] == [{"AdminToken": []}]
    assert "security" not in paths["/healthz"]["get"]
    headers = [p["name"] for p in paths["/v1/events"]["post"]["parameters"]]
    assert headers == ["Idempotency-Key", "traceparent", "tracestate"]  # W3C trace context
    assert body_ref("/v1/events/batch", "post", "202") == "BatchResult"
    assert body_ref("/v1/deliveries", "get", "200") == "DeliveryList"
    assert body_ref("/v1/events/{event_id}", "get", "200") == "EventDetail"
    assert body_ref("/v1/audit-log", "get", "200") == "AuditList"
    assert "secret" in spec["components"]["schemas"]["SubscriptionCreated"]["required"]
    assert "secret" not in spec["components"]["schemas"]["SubscriptionOut"]["properties"]
