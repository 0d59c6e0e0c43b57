"""The cookie and the security headers of portal answers, the link exchange leaving no
token behind, and the control plane's minting and theme routes."""

from __future__ import annotations

from sqlalchemy import select

from common.db.models import PortalLink
from tests.api.support import TestClient
from tests.portal.conftest import CSRF, Portal, make_portal_api


def _cookie(response: object) -> str:
    headers = response.headers  # type: ignore[attr-defined]
    cookie: str = next(v for k, v in headers.multi_items() if k == "set-cookie")
    return cookie


def _cookies(response: object) -> list[str]:
    headers = response.headers  # type: ignore[attr-defined]
    return [v for k, v in headers.multi_items() if k == "set-cookie"]


def test_opening_a_link_sets_a_strict_http_only_cookie_for_the_portal_only(
    portal: Portal,
) -> None:
    tenant, _ = portal.tenant()
    link = portal.mint(tenant)
    answer = portal.browser().get(link["url"])
    cookie = _cookie(answer).lower()
    assert cookie.startswith("hookline_portal=hls_")
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/portal" in cookie
    assert "secure" not in cookie  # plain http here; see the https test below
    # The token leaves the address bar: the page moves on to the portal at once.
    assert 'http-equiv="refresh" content="0;url=/portal/endpoints"' in answer.text
    assert link["url"].split("token=")[1] not in answer.text
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["cache-control"] == "no-store"


def test_over_https_the_cookie_is_secure(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    link = portal.mint(tenant)
    with TestClient(portal.api.app, base_url="https://testserver") as browser:
        answer = browser.get(link["url"].replace("http://testserver", ""))
    assert "secure" in _cookie(answer).lower().split("; ")


def test_behind_a_proxy_that_ends_tls_the_public_url_makes_links_and_cookies_https(
    database_url: str,
) -> None:
    """The API serves plain http behind the proxy and believes no forwarded header, so it
    saw every request as http: links came out `http://` (the token in clear if followed as
    given) and the cookie never `Secure`. `HOOKLINE_PUBLIC_URL` says how browsers reach it."""
    portal = Portal(make_portal_api(database_url, public_url="https://hooks.example.com/"))
    try:
        tenant, _ = portal.tenant()
        link = portal.mint(tenant)
        assert link["url"].startswith("https://hooks.example.com/portal/open?token=hlp_")
        path = link["url"].removeprefix("https://hooks.example.com")
        browser = portal.browser()  # the proxy forwards the browser's requests as plain http
        answer = browser.get(path)
        assert answer.status_code == 200, answer.text
        assert "secure" in _cookie(answer).lower().split("; ")
        # What the browser sends back over https, which the proxy passes on.
        cookie = {"Cookie": _cookie(answer).split(";")[0]}
        page = browser.get("/portal/endpoints", headers=cookie)
        csrf = CSRF.search(page.text)
        assert csrf is not None, page.text
        signed_out = browser.post("/portal/signout", data={"csrf": csrf.group(1)}, headers=cookie)
        assert signed_out.status_code == 200, signed_out.text
        removed = _cookies(signed_out)  # as it was set
        assert len(removed) == 2 and all("secure" in c.lower().split("; ") for c in removed)
    finally:
        portal.close()
        portal.api.close()


def test_only_the_tokens_hash_is_stored(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    link = portal.mint(tenant)
    token = link["url"].split("token=")[1]
    assert token.startswith("hlp_")
    with portal.api.sessionmaker() as session:
        row = session.scalars(select(PortalLink)).one()
    assert token not in (row.token_hash, row.session_hash)
    assert len(row.token_hash) == 64


def test_every_portal_answer_has_a_strict_csp(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    browser = portal.open(tenant)
    for path in ("/portal/endpoints", "/portal/deliveries", "/portal/static/portal.css",
                 "/portal/theme.css", "/portal/nowhere"):  # fmt: skip
        answer = browser.get(path)
        csp = answer.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "style-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"
        # Not no-referrer past the opening page: under it a browser posts `Origin: null`.
        assert answer.headers["referrer-policy"] == "same-origin"
    page = browser.get("/portal/endpoints").text
    assert '<meta name="referrer" content="same-origin">' in page
    assert "<script>" not in page and "style=" not in page and "<style" not in page


def test_a_tenants_theme_sets_frame_ancestors_logo_and_colour(portal: Portal) -> None:
    tenant, key = portal.tenant()
    theme = {
        "name": "Acme Cloud",
        "logo_url": "https://cdn.acme.test/logo.svg",
        "primary_color": "#AA3366",
        "frame_ancestors": ["https://app.acme.test"],
    }
    answer = portal.api.client.put("/v1/portal/theme", json=theme, headers=key)
    assert answer.status_code == 200, answer.text
    browser = portal.open(tenant, https=True)  # an embeddable portal's cookie is Secure
    page = browser.get("/portal/endpoints")
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors https://app.acme.test" in csp
    assert "img-src 'self' https://cdn.acme.test" in csp
    assert "x-frame-options" not in page.headers
    assert "Acme Cloud" in page.text and 'src="https://cdn.acme.test/logo.svg"' in page.text
    assert browser.get("/portal/theme.css").text.strip() == ":root { --primary: #aa3366; }"


def test_a_theme_cannot_carry_anything_into_the_csp(portal: Portal) -> None:
    _, key = portal.tenant()
    bad = [
        {"frame_ancestors": ["https://a.test; script-src *"]},
        {"frame_ancestors": ["*"]},
        {"frame_ancestors": ["http://evil.test"]},
        {"logo_url": "https://a.test/x' 'unsafe-inline"},
        {"logo_url": "javascript:alert(1)"},
        {"primary_color": "red;}body{display:none"},
        {"name": "x" * 81},
        {"frame_ancestors": [f"https://a{i}.test" for i in range(11)]},
        # Python's `$` matches before a final newline; the CSP header cannot carry one.
        {"frame_ancestors": ["https://app.acme.test\n"]},
        {"frame_ancestors": ["http://localhost:8080\n"]},
        {"logo_url": "https://cdn.acme.test/logo.svg\n"},
        {"primary_color": "#aa3366\n"},
    ]
    for body in bad:
        answer = portal.api.client.put("/v1/portal/theme", json=body, headers=key)
        assert answer.status_code == 422, (body, answer.text)


def test_minting_needs_the_portal_scope_and_stays_in_the_keys_tenant(portal: Portal) -> None:
    tenant, _ = portal.tenant("mine")
    other, _ = portal.tenant("other")
    without = portal.api.key(tenant, "subscriptions:write")
    assert portal.api.client.post("/v1/portal/links", json={}, headers=without).status_code == 403
    minting = portal.api.key(tenant, "portal:mint")
    mine = portal.api.client.post("/v1/portal/links", json={"scope": "manage"}, headers=minting)
    assert mine.status_code == 201 and mine.json()["tenant_id"] == tenant
    assert mine.headers["cache-control"] == "no-store"
    theirs = portal.api.client.post("/v1/portal/links", json={"tenant_id": other}, headers=minting)
    assert theirs.status_code == 403
    admin = portal.api.client.post("/v1/portal/links", json={}, headers=portal.api.admin)
    assert admin.status_code == 422  # the admin token names the tenant


def test_a_link_lives_at_most_a_day(portal: Portal) -> None:
    _, key = portal.tenant()
    for seconds in (59, 86_401):
        answer = portal.api.client.post(
            "/v1/portal/links", json={"expires_in_s": seconds}, headers=key
        )
        assert answer.status_code == 422


def test_a_bad_query_is_a_422_page_with_the_portals_headers(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    browser = portal.open(tenant)
    answer = browser.get("/portal/deliveries", params={"event_type": "<script>" * 100})
    assert answer.status_code == 422
    assert "text/html" in answer.headers["content-type"]
    assert "<script>" not in answer.text
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    assert browser.get("/portal/deliveries?status=nope").status_code == 422


EARLY, LATE = "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"  # years 0 and 10000


def test_a_time_outside_the_calendar_in_utc_is_a_422_page_not_a_crash(portal: Portal) -> None:
    """Converting these to UTC overflowed: a 500 from the log's filters and recovery."""
    tenant, _ = portal.tenant()
    sub = portal.subscribe(tenant)
    browser = portal.open(tenant, scope="manage")
    for name, value in (("since", EARLY), ("until", EARLY), ("since", LATE)):
        answer = browser.get("/portal/deliveries", params={name: value})
        assert answer.status_code == 422, (name, value)
        assert "out of range once converted to UTC" in answer.text
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    csrf = portal.csrf(browser)
    for value in (EARLY, LATE):
        form = {"csrf": csrf, "since": value}
        answer = browser.post(f"/portal/endpoints/{sub}/recover", data=form)
        assert answer.status_code == 422 and "a time in the last" in answer.text
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]


def test_a_form_with_a_file_is_a_page_not_a_json_error(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    browser = portal.open(tenant, scope="manage")
    answer = browser.post("/portal/endpoints", files={"csrf": ("x.txt", b"x")})
    assert answer.status_code == 400 and "text/html" in answer.headers["content-type"]
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]


def test_answers_made_before_the_portal_carry_its_headers_too(portal: Portal) -> None:
    """The size limit, the NUL check and the slash redirect answer for /portal outside the
    portal's app, and sent neither its CSP nor X-Frame-Options nor no-store."""
    browser = portal.browser()
    answers = {
        "redirect": browser.get("/portal", follow_redirects=False),
        "too large": browser.post("/portal/signout", content=b"a" * 400_000),
        "NUL in the query": browser.get("/portal/endpoints?q=%00"),
    }
    assert [a.status_code for a in answers.values()] == [307, 413, 422]
    for name, answer in answers.items():
        assert answer.headers["content-security-policy"].endswith("frame-ancestors 'none'"), name
        assert answer.headers["x-frame-options"] == "DENY", name
        assert answer.headers["cache-control"] == "no-store", name
        assert answer.headers["x-content-type-options"] == "nosniff", name
    tenant, _ = portal.tenant()
    page = portal.open(tenant).get("/portal/endpoints")  # the portal's own: left as it was
    assert page.headers.get_list("content-security-policy") == [
        page.headers["content-security-policy"]
    ]
