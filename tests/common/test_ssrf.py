import pytest

from common.errors import UnsafeTargetError
from common.ssrf import check_url, system_resolver


def fixed(*addresses: str):
    return lambda host, port: list(addresses)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
        "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "::1", "::", "fe80::1",
        "fc00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:7f00:1::",
        "ff02::1",
    ],
)  # fmt: skip
def test_non_public_addresses_are_refused(address: str) -> None:
    with pytest.raises(UnsafeTargetError, match="non-public"):
        check_url("https://hooks.example.com/x", resolver=fixed(address))


def test_one_bad_address_among_good_ones_is_enough_to_refuse() -> None:
    with pytest.raises(UnsafeTargetError):
        check_url("https://hooks.example.com/x", resolver=fixed("93.184.216.34", "10.0.0.1"))


def test_public_address_is_allowed_and_pinned() -> None:
    target = check_url("https://hooks.example.com:8443/x", resolver=fixed("93.184.216.34"))
    assert target.host == "hooks.example.com"
    assert (target.port, target.address) == (8443, "93.184.216.34")


@pytest.mark.parametrize("url", ["http://0x7f.1/", "http://2130706433/", "http://127.1/"])
def test_numeric_tricks_resolve_to_loopback_and_are_refused(url: str) -> None:
    with pytest.raises(UnsafeTargetError, match="non-public"):
        check_url(url, allow_http=True, resolver=system_resolver)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/", "scheme"),
        ("http://example.com/", "plain http"),
        ("https://user:pw@example.com/", "credentials"),
        ("https:///nohost", "no host"),
        ("https://example.com:99999/", "invalid"),
    ],
)
def test_malformed_or_disallowed_urls_are_refused(url: str, reason: str) -> None:
    with pytest.raises(UnsafeTargetError, match=reason):
        check_url(url, resolver=fixed("93.184.216.34"))


def test_private_targets_can_be_allowed_for_tests_and_the_dev_server() -> None:
    target = check_url("http://127.0.0.1:9/hook", allow_private=True, resolver=system_resolver)
    assert target.address == "127.0.0.1"
