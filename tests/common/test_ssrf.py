import ipaddress

import pytest

from common.errors import UnsafeTargetError
from common.ssrf import ascii_url, check_url, is_public, numeric_host, system_resolver
from dispatcher.http.request import request_target


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


@pytest.mark.parametrize(
    "address",
    # 127.0.0.1 in the RFC 6052 /48 layout; then 8.8.8.8 where a /96 would put it.
    ["64:ff9b:1:7f00:0:100:808:808", "64:ff9b:1::808:808", "64:ff9b:1:ffff::1"],
)
def test_the_local_use_nat64_prefix_is_never_public_whatever_its_low_bits(address: str) -> None:
    assert not is_public(ipaddress.IPv6Address(address))
    with pytest.raises(UnsafeTargetError, match="non-public"):
        check_url(f"https://[{address}]/hook", resolver=fixed("93.184.216.34"))
    with pytest.raises(UnsafeTargetError, match="non-public"):
        check_url("https://hooks.example.com/x", resolver=fixed(address))


def test_an_internationalised_host_is_resolved_checked_and_sent_in_its_ascii_form() -> None:
    asked: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["93.184.216.34"]

    for url in ("https://b\u00fccher.example/hook", "https://B\u00dcCHER.example/hook"):
        target = check_url(url, resolver=resolver)
        assert request_target(target) == ("/hook", "xn--bcher-kva.example")
    assert asked == ["xn--bcher-kva.example"] * 2
    # Full-width digits map to an address, which is checked as one.
    with pytest.raises(UnsafeTargetError, match="non-public"):
        check_url("https://\uff11\uff12\uff17.\uff10.\uff10.\uff12/", resolver=resolver)
    assert ascii_url("https://\u4f8b\u3048.jp:8443/p?q=1") == "https://xn--r8jz45g.jp:8443/p?q=1"
    with pytest.raises(UnsafeTargetError, match="xn--"):
        ascii_url("https://i\u2764.ws/")


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
    "host", ["-1", "0x-1", "+1", "1_0", "0x1_0", "\uff11\uff12\uff17", "\u0661\u0662\u0667"]
)
def test_a_signed_or_non_ascii_number_is_a_name_not_an_address(host: str) -> None:
    # `int()` reads all of these; `inet_aton` none. As names they go to the resolver.
    assert numeric_host(host) is None
    with pytest.raises(UnsafeTargetError):  # non-public, or (Arabic-Indic) no valid name
        check_url(f"https://{host}/hook", resolver=fixed("10.0.0.1"))


@pytest.mark.parametrize(
    "host", ["-1.0.0.1", "0x-1.0.0.1", "256.1", "1.2.3.999", "1.2.3.4.5", "4294967296", "08"]
)
def test_a_host_ending_in_a_number_must_be_an_address(host: str) -> None:
    def resolver(host: str, port: int) -> list[str]:
        raise AssertionError(f"{host!r} is no name to resolve")

    with pytest.raises(UnsafeTargetError, match="not a valid IPv4 address"):
        check_url(f"https://{host}/hook", allow_private=True, resolver=resolver)


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


# --- Property tests: every form of a non-public address is refused, public ones pass ------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# The ranges a receiver can never be in, written out here rather than taken from the guard.
BLOCKED_V4 = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    )
]  # fmt: skip
blocked_v4 = st.sampled_from(BLOCKED_V4).flatmap(
    lambda net: st.integers(int(net.network_address), int(net.broadcast_address)).map(
        ipaddress.IPv4Address
    )
)
public_v4 = st.ip_addresses(v=4).filter(
    lambda a: not any(a in net for net in BLOCKED_V4) and a.is_global
)


def spellings(address: ipaddress.IPv4Address) -> st.SearchStrategy[str]:
    """The ways a C resolver accepts to write `address`: dotted, integer, hex, octal, short."""
    value = int(address)
    octets = address.packed
    return st.sampled_from(
        [
            str(address),
            str(value),
            hex(value),
            ".".join(f"0x{o:x}" for o in octets),
            ".".join(f"0{o:o}" for o in octets),
            f"{octets[0]}.{value & 0xFFFFFF}",
            f"{octets[0]}.{octets[1]}.{value & 0xFFFF}",
        ]
    )


def embeddings(address: ipaddress.IPv4Address) -> list[str]:
    """IPv6 forms that carry `address`: mapped, 6to4 and NAT64."""
    value = int(address)
    return [
        f"::ffff:{address}",
        str(ipaddress.IPv6Address((0x2002 << 112) | (value << 80))),
        str(ipaddress.IPv6Address((0x64FF9B << 96) | value)),
    ]


@settings(max_examples=300, deadline=None)
@given(blocked_v4.flatmap(spellings))
def test_every_spelling_of_a_blocked_address_is_refused_as_a_host(host: str) -> None:
    # The resolver would say "public": a numeric host is an address, whatever DNS says.
    with pytest.raises(UnsafeTargetError, match="non-public"):
        check_url(f"https://{host}/hook", resolver=fixed("93.184.216.34"))


@settings(max_examples=200, deadline=None)
@given(blocked_v4.flatmap(lambda a: st.sampled_from([*embeddings(a), str(a)])))
def test_a_name_resolving_to_a_blocked_address_in_any_form_is_refused(address: str) -> None:
    with pytest.raises(UnsafeTargetError, match="non-public"):
        check_url("https://hooks.example.com/x", resolver=fixed(address))


@settings(max_examples=200, deadline=None)
@given(public_v4)
def test_public_addresses_in_every_spelling_denote_the_same_address(address) -> None:
    for host in [str(address), str(int(address)), hex(int(address))]:
        assert numeric_host(host) == address
    target = check_url("https://hooks.example.com/x", resolver=fixed(str(address)))
    assert target.address == str(address)


@settings(max_examples=100, deadline=None)
@given(st.ip_addresses(v=6, network="fc00::/7") | st.ip_addresses(v=6, network="fe80::/10"))
def test_private_and_link_local_ipv6_are_refused(address) -> None:
    with pytest.raises(UnsafeTargetError, match="non-public"):
        check_url(f"https://[{address}]/x", resolver=fixed("93.184.216.34"))


def test_a_literal_address_is_checked_without_asking_the_resolver() -> None:
    def resolver(host: str, port: int) -> list[str]:
        raise AssertionError("a literal address must not be resolved")

    with pytest.raises(UnsafeTargetError, match="non-public"):
        check_url("https://[::ffff:169.254.169.254]/latest/meta-data", resolver=resolver)
    assert check_url("https://93.184.216.34/", resolver=resolver).address == "93.184.216.34"


@pytest.mark.parametrize(
    "url",
    ["https://hooks.example.com@127.0.0.1/", "https://a b.example.com/", "https://h\\@x/"],
)
def test_userinfo_and_whitespace_tricks_are_refused(url: str) -> None:
    with pytest.raises(UnsafeTargetError):
        check_url(url, resolver=fixed("93.184.216.34"))


def test_multicast_and_unspecified_stay_refused_even_with_private_targets_allowed() -> None:
    for address in ("0.0.0.0", "224.0.0.1", "::"):
        with pytest.raises(UnsafeTargetError):
            check_url("https://h.example/", allow_private=True, resolver=fixed(address))


def test_scoped_addresses_from_the_resolver_are_refused() -> None:
    with pytest.raises(UnsafeTargetError):
        check_url("https://h.example/", allow_private=True, resolver=fixed("fe80::1%eth0"))


# --- the dispatcher's resolver: answers remembered briefly, the check still per attempt ---

from common.ssrf import CachingResolver  # noqa: E402


class Answers:
    """A DNS stand-in that can change its answer, as a rebinding attacker's would."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.asked = 0

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked += 1
        if self.address == "fail":
            raise UnsafeTargetError(f"cannot resolve host {host!r}")
        return [self.address]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_answers_are_remembered_for_the_ttl_then_asked_again() -> None:
    answers, clock = Answers("93.184.216.34"), Clock()
    resolver = CachingResolver(answers, ttl_s=10.0, clock=clock)
    for _ in range(3):
        assert check_url("https://hooks.example.com/x", resolver=resolver).address == (
            "93.184.216.34"
        )
    assert answers.asked == 1
    clock.now += 10.0
    answers.address = "93.184.216.35"
    assert check_url("https://hooks.example.com/x", resolver=resolver).address == "93.184.216.35"
    assert answers.asked == 2


def test_a_rebound_answer_is_still_checked_when_it_arrives() -> None:
    answers, clock = Answers("93.184.216.34"), Clock()
    resolver = CachingResolver(answers, ttl_s=10.0, clock=clock)
    check_url("https://hooks.example.com/x", resolver=resolver)
    answers.address = "169.254.169.254"  # the name now points at the metadata service
    clock.now += 10.0
    with pytest.raises(UnsafeTargetError):
        check_url("https://hooks.example.com/x", resolver=resolver)


def test_failures_are_not_remembered() -> None:
    answers = Answers("fail")
    resolver = CachingResolver(answers, ttl_s=10.0, clock=Clock())
    for _ in range(2):
        with pytest.raises(UnsafeTargetError):
            check_url("https://hooks.example.com/x", resolver=resolver)
    assert answers.asked == 2
