"""The SSRF guard: which receiver addresses are refused, and why."""

from __future__ import annotations

import ipaddress

import pytest

from app.alerts.urls import UrlRefused, address_problem, check_addresses, check_url, parse_target


@pytest.mark.parametrize(
    ("ip", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.31.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.1.1", "shared"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("::ffff:127.0.0.1", "loopback"),
    ],
)
def test_internal_addresses_are_refused_by_kind(ip: str, kind: str) -> None:
    assert kind in (address_problem(ipaddress.ip_address(ip), allow_private=False) or "")
    assert address_problem(ipaddress.ip_address(ip), allow_private=True) is None


@pytest.mark.parametrize("ip", ["169.254.169.254", "fd00:ec2::254", "100.100.100.200", "168.63.129.16"])
def test_metadata_addresses_are_refused_even_when_private_ones_are_allowed(ip: str) -> None:
    assert "metadata" in (address_problem(ipaddress.ip_address(ip), allow_private=True) or "")


def test_public_addresses_pass() -> None:
    assert address_problem(ipaddress.ip_address("1.1.1.1"), allow_private=False) is None
    assert address_problem(ipaddress.ip_address("2606:4700::1111"), allow_private=False) is None


def test_a_name_resolving_to_one_internal_address_is_refused() -> None:
    addresses = [ipaddress.ip_address("1.1.1.1"), ipaddress.ip_address("10.0.0.5")]
    with pytest.raises(UrlRefused, match=r"'hooks\.example\.com' resolves to 10\.0\.0\.5 is a private"):
        check_addresses("hooks.example.com", addresses, allow_private=False)


def test_localhost_resolves_and_is_refused() -> None:
    with pytest.raises(UrlRefused, match="loopback"):
        check_url("http://localhost:8080/hook", allow_private=False)


def test_target_keeps_path_query_and_default_ports() -> None:
    t = parse_target("https://Hooks.Example.com/a/b?token=x")
    assert (t.scheme, t.host, t.port, t.path) == ("https", "hooks.example.com", 443, "/a/b?token=x")
    assert parse_target("http://1.2.3.4").port == 80 and parse_target("http://1.2.3.4").path == "/"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://x.example.com/",
        "http://u:p@x.example.com/",
        "http:///x",
        "http://x:99999/",
        "http://x.example.com/a b",
    ],
)
def test_malformed_or_unsafe_urls_are_refused(url: str) -> None:
    with pytest.raises(UrlRefused):
        parse_target(url)
