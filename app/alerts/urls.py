"""Where a webhook may point: the server-side request forgery guard.

A webhook makes the backend send requests to a URL an admin typed; pointed inward it would
reach the metadata service of the cloud (credentials), the database, or anything on the
backend's private network. So a URL whose host is, or resolves to, a loopback, private,
link-local, shared (CGNAT), multicast, reserved or unspecified address is refused, unless
SPLITWATCH_WEBHOOK_ALLOW_PRIVATE=true (a receiver on the same network). Cloud metadata
addresses are refused even then: no receiver lives there.

The check runs when the webhook is saved (422 with the reason) and again before every send,
against what the name resolves to at that moment (DNS can change after the check); the
sender then connects to the address it checked, not to a second lookup.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance metadata services: AWS/GCP/Azure/OpenStack 169.254.169.254, AWS IPv6 fd00:ec2::254,
# Alibaba 100.100.100.200, Azure wireserver 168.63.129.16, Oracle 192.0.0.192.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "168.63.129.16", "192.0.0.192")
)
MAX_URL_LENGTH = 2000


class UrlRefused(ValueError):
    """The URL may not be used as a webhook; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str  # as written (IDNA-encoded when it is a name)
    port: int
    path: str  # path and query, at least "/"


def parse_target(url: str) -> Target:
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(
            f"the URL cannot be parsed ({exc}): write e.g. https://hooks.example.com/splitwatch"
        ) from exc
    if parts.scheme not in ("http", "https"):
        raise UrlRefused(f"scheme {parts.scheme or '(none)'!r} is not allowed: use http:// or https://")
    if not parts.hostname:
        raise UrlRefused("the URL names no host: write e.g. https://hooks.example.com/splitwatch")
    if parts.username or parts.password:
        raise UrlRefused("credentials in the URL are not allowed: put a token in the path or query instead")
    if any(c in url for c in "\r\n\t ") or "\x00" in url:
        raise UrlRefused("the URL holds whitespace or control characters")
    host = parts.hostname
    try:
        host.encode("ascii")
    except UnicodeEncodeError:
        try:
            host = host.encode("idna").decode()
        except UnicodeError as exc:
            raise UrlRefused(f"host {parts.hostname!r} is not a valid name") from exc
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.scheme, host, port or (443 if parts.scheme == "https" else 80), path)


def address_problem(ip: IpAddress, allow_private: bool) -> str | None:
    """Why a receiver may not be at `ip` (None when it may)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata service address"
    if allow_private:
        return None
    if ip.is_loopback:
        kind = "loopback"
    elif ip.is_link_local:
        kind = "link-local"
    elif ip.is_multicast:
        kind = "multicast"
    elif ip.is_unspecified:
        kind = "unspecified"
    elif isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10"):
        kind = "shared (carrier-grade NAT)"
    elif ip.is_reserved:
        kind = "reserved"
    elif ip.is_private:
        kind = "private"
    elif not ip.is_global:
        kind = "reserved"
    else:
        return None
    return (
        f"{ip} is a {kind} address: webhooks may not reach internal addresses "
        "(set SPLITWATCH_WEBHOOK_ALLOW_PRIVATE=true to allow a receiver on your own network)"
    )


def resolve(host: str, port: int) -> list[IpAddress]:
    """The addresses `host` resolves to now (a literal address resolves to itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UrlRefused(f"host {host!r} does not resolve ({exc}): check the name") from exc
    seen: list[IpAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if ip not in seen:
            seen.append(ip)
    return seen


def check_addresses(host: str, addresses: Sequence[IpAddress], allow_private: bool) -> IpAddress:
    """The first address to connect to; UrlRefused when ANY of them is refused (a name that
    resolves to one public and one internal address could be steered to the internal one)."""
    if not addresses:
        raise UrlRefused(f"host {host!r} resolves to no address: check the name")
    for ip in addresses:
        problem = address_problem(ip, allow_private)
        if problem is not None:
            via = "" if str(ip) == host else f"{host!r} resolves to "
            raise UrlRefused(via + problem)
    return addresses[0]


def check_url(url: str, allow_private: bool) -> tuple[Target, IpAddress]:
    """Parse, resolve and check: the target and the address to connect to, or UrlRefused."""
    target = parse_target(url)
    return target, check_addresses(target.host, resolve(target.host, target.port), allow_private)
