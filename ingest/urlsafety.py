"""The address policy for every URL vidbrief fetches or calls (videos, redirects, webhooks).

A URL passes when its scheme is http or https and *every* address its host resolves to is a
public one. Names are resolved, so numeric tricks (``http://2130706433/``, ``http://0x7f.1/``)
and names that point inside (``localhost``, a rebinding DNS name) are judged by the address
they really reach. IPv6 forms that embed an IPv4 address (mapped ``::ffff:a.b.c.d``, 6to4,
NAT64) are judged by the embedded address.

Refused unless ``allow_private``: loopback, private, link-local, multicast, reserved,
unspecified and other not globally routable addresses. Refused always: cloud metadata
endpoints (``169.254.169.254``, ``fd00:ec2::254``, ``metadata.google.internal`` …) — no
video or webhook lives there, and a leak of instance credentials is the classic SSRF prize.

Pure Python (``socket``, ``ipaddress``): the producer and the webhook sender import it too.
A check at request time is not enough on its own against DNS rebinding: a fetcher should also
call :meth:`AddressPolicy.check_connect` with the address it actually connects to.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from ingest.errors import UnresolvableHost, UnsafeURL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

ALLOWED_SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
METADATA_HOSTS = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
_NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")
# Characters on which URL parsers disagree (urllib vs. browsers vs. yt-dlp): refuse outright.
_AMBIGUOUS_CHARS = frozenset("\\\t\r\n ") | frozenset(chr(c) for c in range(32))

__all__ = [
    "AddressPolicy",
    "UnresolvableHost",
    "check_redirect",
    "check_url",
    "literal_addresses",
    "refusal_reason",
    "resolve_host",
]


def resolve_host(host: str, port: int) -> list[str]:
    """All addresses ``host`` resolves to (IPv4 and IPv6), as strings."""
    try:
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        temporary = isinstance(e, socket.gaierror) and e.errno == socket.EAI_AGAIN
        raise UnresolvableHost(f"host {host!r} does not resolve: {e}", temporary=temporary) from e
    return [str(info[4][0]) for info in infos]


def literal_addresses(host: str, _port: int) -> list[str]:
    """A resolver without DNS, for a quick early check: an address literal is itself,
    ``localhost`` is loopback, any other name is unknown (no addresses)."""
    if host == "localhost" or host.endswith(".localhost"):
        return ["127.0.0.1"]
    try:
        return [str(ipaddress.ip_address(host.split("%", 1)[0]))]
    except ValueError:
        return []


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64_PREFIX:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _category(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public address, or None when it is."""
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("not globally routable", not ip.is_global),
    )
    return next((name for name, hit in checks if hit), None)


def refusal_reason(address: str | IPAddress, *, allow_private: bool = False) -> str | None:
    """Why the policy refuses ``address`` (e.g. ``"loopback address 127.0.0.1"``), or None."""
    ip = ipaddress.ip_address(str(address).split("%", 1)[0])  # drop an IPv6 zone id
    inner = _embedded_ipv4(ip)
    if inner is not None:
        reason = refusal_reason(inner, allow_private=allow_private)
        return f"{reason} (embedded in {ip})" if reason else None
    if ip in METADATA_ADDRESSES:
        return f"cloud metadata address {ip}"
    category = None if allow_private else _category(ip)
    return f"{category} address {ip}" if category else None


def _normalise_host(host: str) -> str:
    return host.strip().lower().rstrip(".").strip("[]")


def _parse_allowed(entries: Iterable[str]) -> frozenset[str]:
    """``host`` or ``host:port`` entries (IPv6 as ``[::1]:8080``), normalised."""
    out = set()
    for entry in entries:
        parts = urlsplit(f"//{entry.strip()}")
        host = _normalise_host(parts.hostname or "")
        out.add(f"{host}:{parts.port}" if parts.port else host)
    return frozenset(out)


@dataclass(frozen=True)
class AddressPolicy:
    """Which URLs and addresses may be fetched.

    ``allowed_hosts`` names hosts (``host`` or ``host:port``, as written in URLs) that are
    trusted whatever they resolve to: an internal mirror, or a loopback server standing in for
    a public site in tests. ``resolver`` maps (host, port) to addresses (default: DNS).
    """

    allow_private: bool = False
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    resolver: Resolver = resolve_host

    @classmethod
    def create(
        cls,
        *,
        allow_private: bool = False,
        allowed_hosts: Iterable[str] = (),
        resolver: Resolver | None = None,
    ) -> AddressPolicy:
        """A policy with ``allowed_hosts`` parsed from ``host[:port]`` strings."""
        return cls(allow_private, _parse_allowed(allowed_hosts), resolver or resolve_host)

    def host_is_trusted(self, host: str, port: int) -> bool:
        """True when ``host`` (as written in the URL) is on the allow-list."""
        host = _normalise_host(host)
        return host in self.allowed_hosts or f"{host}:{port}" in self.allowed_hosts

    def check_url(self, url: str) -> None:
        """Raise :class:`UnsafeURL` unless ``url`` is http(s) and its host is allowed."""
        _scheme, host, port = _split(url)
        if not self.host_is_trusted(host, port):
            self.checked_addresses(url)

    def checked_addresses(self, url: str) -> list[str]:
        """The addresses ``url``'s host resolves to, each one checked (a trusted host's are not):
        connect to these and only these, since a second lookup may answer otherwise (DNS
        rebinding). Raises like :meth:`check_url`."""
        _scheme, host, port = _split(url)
        trusted = self.host_is_trusted(host, port)
        if not trusted and host in METADATA_HOSTS:
            raise UnsafeURL(f"refused {_shown(url)}: {host!r} is a cloud metadata endpoint")
        addresses = list(dict.fromkeys(self.resolver(host, port)))
        if not addresses:
            raise UnresolvableHost(f"refused {_shown(url)}: host {host!r} has no addresses")
        for address in [] if trusted else addresses:
            self._check_address(url, host, address)
        return addresses

    def check_connect(self, host: str, port: int, address: str) -> None:
        """Raise :class:`UnsafeURL` if a connection to ``address`` (for ``host``) is refused.

        Call it with the address a socket is about to connect to: this closes the gap between
        the check of a name and its use (DNS rebinding), and catches any parser disagreement.
        """
        if not self.host_is_trusted(host, port):
            self._check_address(f"{host}:{port}", host, address)

    def check_redirect(self, current_url: str, location: str) -> str:
        """Check one redirect hop; return the absolute URL it leads to."""
        target = urljoin(current_url, location)
        try:
            self.check_url(target)
        except UnresolvableHost as e:
            raise UnresolvableHost(
                f"redirect from {_shown(current_url)}: {e}", temporary=e.temporary
            ) from e
        except UnsafeURL as e:
            raise UnsafeURL(f"redirect from {_shown(current_url)}: {e}") from e
        return target

    def _check_address(self, url: str, host: str, address: str) -> None:
        reason = refusal_reason(address, allow_private=self.allow_private)
        if reason is None:
            return
        via = "" if _normalise_host(address) == host else f" ({host!r} resolves to it)"
        hint = "" if "metadata" in reason else "; set VIDBRIEF_ALLOW_PRIVATE_URLS=true to allow"
        raise UnsafeURL(f"refused {_shown(url)}: {reason}{via}{hint}")


def _shown(url: str, limit: int = 200) -> str:
    return url if len(url) <= limit else url[:limit] + "…"


def _split(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL, or UnsafeURL saying what is wrong."""
    if any(c in _AMBIGUOUS_CHARS for c in url):
        raise UnsafeURL(f"refused {_shown(url)!r}: whitespace, control or backslash characters")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise UnsafeURL(
            f"refused {_shown(url)}: scheme {scheme or 'none'!r} is not allowed; "
            "only http and https URLs are fetched"
        )
    host = _normalise_host(parts.hostname or "")
    if not host:
        raise UnsafeURL(f"refused {_shown(url)}: no host")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError as e:
        raise UnsafeURL(f"refused {_shown(url)}: invalid port") from e
    return scheme, host, port


def check_url(
    url: str,
    allow_private: bool,
    *,
    allowed_hosts: Iterable[str] = (),
    resolver: Resolver | None = None,
) -> None:
    """Raise :class:`UnsafeURL` unless ``url`` may be fetched (see the module docstring)."""
    AddressPolicy.create(
        allow_private=allow_private, allowed_hosts=allowed_hosts, resolver=resolver
    ).check_url(url)


def check_redirect(
    current_url: str,
    location: str,
    allow_private: bool,
    *,
    allowed_hosts: Iterable[str] = (),
    resolver: Resolver | None = None,
) -> str:
    """Check one redirect hop (``Location`` may be relative); return the absolute target."""
    policy = AddressPolicy.create(
        allow_private=allow_private, allowed_hosts=allowed_hosts, resolver=resolver
    )
    return policy.check_redirect(current_url, location)
