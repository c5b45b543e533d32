"""The address policy: which URLs may be fetched, and how a refusal reads. No network used:
addresses are literals, ``localhost``, or come from an injected resolver."""

from __future__ import annotations

import pytest

from ingest.errors import UnsafeURL
from ingest.urlsafety import (
    AddressPolicy,
    UnresolvableHost,
    check_redirect,
    check_url,
    literal_addresses,
    refusal_reason,
    resolve_host,
)

REFUSED = [
    ("http://127.0.0.1/v.mp4", "loopback address 127.0.0.1"),
    ("http://127.8.9.10/", "loopback"),
    ("http://localhost:8080/v.mp4", "'localhost' resolves to it"),
    ("http://2130706433/", "loopback address 127.0.0.1 ('2130706433' resolves to it)"),
    ("http://0x7f.1/", "loopback address 127.0.0.1"),
    ("http://0177.0.0.1/", "loopback address 127.0.0.1"),
    ("http://[::1]:8000/", "loopback address ::1"),
    ("http://[::ffff:127.0.0.1]/", "loopback address 127.0.0.1 (embedded in ::ffff:7f00:1)"),
    ("http://[::ffff:10.1.2.3]/", "private address 10.1.2.3"),
    ("http://[2002:7f00:1::]/", "loopback address 127.0.0.1 (embedded in 2002:7f00:1::)"),
    ("http://[64:ff9b::a00:1]/", "private address 10.0.0.1"),
    ("http://10.0.0.1/", "private address 10.0.0.1"),
    ("http://172.16.5.4/", "private address"),
    ("https://192.168.1.10/", "private address"),
    ("http://[fd12:3456::1]/", "private address"),
    ("http://169.254.10.1/", "link-local address"),
    ("http://[fe80::1]/", "link-local address"),
    ("http://224.0.0.251/", "multicast address"),
    ("http://0.0.0.0/", "unspecified address"),
    ("http://100.64.0.7/", "not globally routable"),
    ("http://240.0.0.1/", "reserved address"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata address 169.254.169.254"),
    ("http://[fd00:ec2::254]/", "cloud metadata address fd00:ec2::254"),
    ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata endpoint"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_internal_addresses_are_refused_with_the_reason(url, reason):
    with pytest.raises(UnsafeURL) as err:
        check_url(url, allow_private=False)
    assert reason in str(err.value)
    assert url[:30] in str(err.value)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/v.mp4",
        "gopher://example.com/",
        "data:text/plain,hi",
        "//example.com/",
        "javascript:alert(1)",
    ],
)
def test_only_http_and_https_are_allowed(url):
    with pytest.raises(UnsafeURL, match="only http and https"):
        check_url(url, allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com\\@127.0.0.1/",
        "http://exa mple.com/",
        "http://example.com/\r\nHost: x",
        "http:///v.mp4",
    ],
)
def test_ambiguous_or_hostless_urls_are_refused(url):
    with pytest.raises(UnsafeURL):
        check_url(url, allow_private=True)


@pytest.mark.parametrize(
    "url", ["http://8.8.8.8/v.mp4", "https://[2001:4860:4860::8888]/", "http://[64:ff9b::808:808]/"]
)
def test_public_addresses_pass(url):
    check_url(url, allow_private=False)


def test_allow_private_admits_loopback_and_private_but_never_metadata():
    check_url("http://127.0.0.1:8000/", allow_private=True)
    check_url("http://10.0.0.1/", allow_private=True)
    check_url("http://[::1]/", allow_private=True)
    for url in (
        "http://169.254.169.254/",
        "http://[fd00:ec2::254]/",
        "http://metadata.google.internal/",
    ):
        with pytest.raises(UnsafeURL, match="metadata"):
            check_url(url, allow_private=True)


def test_every_resolved_address_must_be_public():
    answers = {"cdn.example": ["93.184.216.34"], "mixed.example": ["93.184.216.34", "10.0.0.5"]}
    policy = AddressPolicy.create(resolver=lambda host, port: answers[host])
    policy.check_url("https://cdn.example/v.mp4")
    with pytest.raises(UnsafeURL, match=r"private address 10\.0\.0\.5 \('mixed.example'"):
        policy.check_url("https://mixed.example/v.mp4")


def test_a_name_that_does_not_resolve_is_refused():
    def resolver(host: str, port: int) -> list[str]:
        raise UnresolvableHost(f"host {host!r} does not resolve", temporary=True)

    with pytest.raises(UnresolvableHost) as err:
        check_url("https://nowhere.example/", allow_private=False, resolver=resolver)
    assert err.value.temporary
    with pytest.raises(UnsafeURL, match="no addresses"):
        check_url("https://empty.example/", allow_private=False, resolver=lambda h, p: [])


def test_resolve_host_returns_every_address():
    assert "127.0.0.1" in resolve_host("localhost", 80)


def test_allowed_hosts_trust_exactly_the_named_host_and_port():
    policy = AddressPolicy.create(
        allowed_hosts=["127.0.0.1:8080", "mirror.internal"],
        resolver=lambda host, port: ["10.9.9.9"],
    )
    policy.check_url("http://127.0.0.1:8080/v.mp4")
    policy.check_url("http://MIRROR.internal./v.mp4")  # any port, case and trailing dot
    for url in ("http://127.0.0.1:8081/", "http://localhost:8080/", "http://other.internal/"):
        with pytest.raises(UnsafeURL):
            policy.check_url(url)


def test_a_redirect_hop_is_checked_and_made_absolute():
    assert check_redirect("http://8.8.8.8/a/b", "../c?x=1", False) == "http://8.8.8.8/c?x=1"
    with pytest.raises(UnsafeURL, match=r"redirect from http://8\.8\.8\.8/a: .*private"):
        check_redirect("http://8.8.8.8/a", "http://10.0.0.1/x", False)
    with pytest.raises(UnsafeURL, match="only http and https"):
        check_redirect("http://8.8.8.8/a", "file:///etc/passwd", False)


def test_allowed_host_redirecting_to_a_private_one_is_refused():
    policy = AddressPolicy.create(allowed_hosts=["127.0.0.1:5000"])
    policy.check_url("http://127.0.0.1:5000/redirect")
    with pytest.raises(UnsafeURL, match="loopback"):
        policy.check_redirect("http://127.0.0.1:5000/redirect", "http://localhost:5000/v.mp4")


def test_check_connect_judges_the_address_actually_connected_to():
    policy = AddressPolicy.create(allowed_hosts=["127.0.0.1:5000"])
    policy.check_connect("example.com", 443, "93.184.216.34")
    policy.check_connect("127.0.0.1", 5000, "127.0.0.1")  # trusted by name
    with pytest.raises(UnsafeURL, match=r"loopback address 127\.0\.0\.1 \('rebind.example'"):
        policy.check_connect("rebind.example", 80, "127.0.0.1")


def test_refusal_reason_names_the_category():
    assert refusal_reason("8.8.8.8") is None
    assert refusal_reason("fe80::1%eth0") == "link-local address fe80::1"
    assert refusal_reason("10.0.0.1", allow_private=True) is None
    assert refusal_reason("169.254.169.254", allow_private=True) == (
        "cloud metadata address 169.254.169.254"
    )


def test_the_check_without_dns_knows_literals_and_localhost_only() -> None:
    policy = AddressPolicy.create(resolver=literal_addresses)
    for url in (
        "http://127.0.0.1/x",
        "http://[::1]:8080/x",
        "http://localhost/x",
        "http://10.1.2.3/",
    ):
        with pytest.raises(UnsafeURL, match="address"):
            policy.check_url(url)
    with pytest.raises(UnresolvableHost):  # a name: left to the check where it is fetched
        policy.check_url("https://example.com/v.mp4")
    policy.check_url("https://93.184.216.34/v.mp4")  # a public literal passes
