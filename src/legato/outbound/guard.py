"""Which URLs an outbound webhook may reach (SSRF guard), and the address to connect to.

A URL must be http(s), name a host and carry no credentials. Its host is resolved and every
address must be globally routable (not loopback, private, link-local such as the
169.254.169.254 metadata service, shared CGNAT space, multicast, reserved, unspecified, nor an
IPv6 address embedding one of those), unless it lies in a network the admin allow-listed
(`AccessPolicy.webhook_allowed_hosts`). The check runs when an endpoint is saved and again
before every attempt, which then connects to the address it checked (`Target.url`, with the
original Host header and TLS server name), so a DNS answer that changes in between cannot
redirect a delivery.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

import httpx

from legato.errors import ValidationFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# host, port -> the addresses it resolves to (a test replaces DNS with a table)
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT_S = 5.0
SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")  # CGNAT, RFC 6598
NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
METADATA = ipaddress.ip_address("169.254.169.254")


class UrlRefused(ValidationFailed):
    code = "WEBHOOK_URL_REFUSED"

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"webhook URL refused: {reason}", details={"url": url, "reason": reason})
        self.reason = reason


@dataclass(frozen=True)
class Target:
    """Where one request goes: `url` has the checked address in place of the host name;
    `host_header` and `server_name` (TLS SNI and certificate name) keep the original one."""

    url: str
    host_header: str
    server_name: str | None  # https only
    address: str


def parse_url(url: str) -> httpx.URL:
    """The URL if its form is acceptable (scheme, host, no userinfo), else UrlRefused."""
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(url[:100], f"longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise UrlRefused(url, "it contains whitespace or control characters")
    try:
        parsed = httpx.URL(url)
        port = parsed.port  # an invalid port raises here
        host = parsed.host  # and an invalid international name here
    except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
        raise UrlRefused(url, f"not a valid URL ({exc})") from exc
    if parsed.scheme not in ("http", "https"):
        raise UrlRefused(url, "the scheme must be http or https")
    if not host:
        raise UrlRefused(url, "it names no host")
    if parsed.userinfo or "@" in url.split("//", 1)[-1].split("/", 1)[0]:
        raise UrlRefused(url, "credentials in the URL are not allowed; put them in the path "
                              "or query, or verify the signature instead")
    if port is not None and not 0 < port < 65536:
        raise UrlRefused(url, f"not a valid URL (port {port})")
    return parsed


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """IPs or CIDRs as networks; ValueError names the first bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"not an IP address or network: {value!r}") from exc
    return tuple(networks)


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (IPv4-mapped, 6to4, NAT64), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in net for net in NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refusal(ip: IPAddress) -> str | None:
    """Why `ip` may not be reached (None: it is globally routable). Pure."""
    inner = embedded_ipv4(ip)
    if inner is not None:
        why = refusal(inner)
        return f"{ip} embeds {why}" if why else None
    if ip.is_unspecified:
        return f"{ip} is unspecified"
    if ip.is_loopback:
        return f"{ip} is a loopback address"
    if ip == METADATA:
        return f"{ip} is the cloud metadata service (link-local)"
    if ip.is_link_local:
        return f"{ip} is link-local"
    if ip.is_multicast:
        return f"{ip} is multicast"
    if ip in SHARED_ADDRESS_SPACE:
        return f"{ip} is shared address space (CGNAT, 100.64.0.0/10)"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return f"{ip} is site-local"
    if ip.is_reserved:
        return f"{ip} is reserved"
    if ip.is_private:
        return f"{ip} is a private address"
    if not ip.is_global:
        return f"{ip} is not globally routable"
    return None


def allowed(ip: IPAddress, networks: Sequence[Network]) -> bool:
    """Whether the admin allow-listed `ip` (or the IPv4 address it embeds)."""
    candidates = [ip, *filter(None, [embedded_ipv4(ip)])]
    return any(c.version == n.version and c in n for c in candidates for n in networks)


def check_addresses(url: str, addresses: Sequence[str], networks: Sequence[Network]) -> IPAddress:
    """The address to connect to: the first one, once every one passed. Pure."""
    if not addresses:
        raise UrlRefused(url, "the host resolves to no address")
    parsed = []
    for value in addresses:
        ip = ipaddress.ip_address(value.split("%", 1)[0])  # no IPv6 zone: link-local anyway
        why = refusal(ip)
        if why is not None and not allowed(ip, networks):
            raise UrlRefused(url, f"{why}; an admin may allow it with webhook_allowed_hosts")
        parsed.append(ip)
    return parsed[0]


async def system_resolver(host: str, port: int) -> Sequence[str]:
    """The host's addresses from the system resolver (in the loop's executor)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def resolve(url: str, networks: Sequence[Network],
                  resolver: Resolver = system_resolver) -> Target:
    """Check `url` and its host's addresses now; the Target to send to, or UrlRefused."""
    parsed = parse_url(url)
    host = parsed.host
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses: Sequence[str] = [str(literal)]
    else:
        ascii_host = parsed.raw_host.decode("ascii")
        try:
            addresses = await asyncio.wait_for(resolver(ascii_host, port), RESOLVE_TIMEOUT_S)
        except (OSError, TimeoutError, UnicodeError) as exc:
            raise UrlRefused(url, f"the host {ascii_host} cannot be resolved "
                                  f"({exc.__class__.__name__}: {exc})") from exc
    address = check_addresses(url, addresses, networks)
    netloc = parsed.raw_host.decode("ascii")
    if isinstance(literal, ipaddress.IPv6Address):
        netloc = f"[{netloc}]"
    if parsed.port is not None:
        netloc = f"{netloc}:{parsed.port}"
    return Target(
        url=str(parsed.copy_with(host=str(address))),
        host_header=netloc,
        server_name=(parsed.raw_host.decode("ascii")
                     if parsed.scheme == "https" and literal is None else None),
        address=str(address),
    )
