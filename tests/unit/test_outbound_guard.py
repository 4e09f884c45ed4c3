"""The SSRF guard: URL forms refused, every class of address that is not globally routable
refused (also behind a name or embedded in IPv6), the allow-list, and the pinned target."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest

from legato.outbound import guard
from legato.outbound.guard import UrlRefused, parse_networks, resolve

PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"
NONE = parse_networks([])


def table(**hosts: list[str]) -> guard.Resolver:
    """A resolver answering from a table (no DNS)."""
    async def lookup(host: str, port: int) -> Sequence[str]:
        name = host.replace("-", "_").replace(".", "_")
        if name not in hosts:
            raise OSError(f"no such host: {host}")
        return hosts[name]
    return lookup


DNS = table(hooks_example_test=[PUBLIC_V4, PUBLIC_V6], sneaky_example_test=[PUBLIC_V4, "10.1.2.3"],
            meta_example_test=["169.254.169.254"], local_example_test=["127.0.0.1"])


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "::1",  # loopback
    "10.0.0.1", "172.16.5.4", "192.168.1.1", "fc00::1", "fd12:3456::1",  # private
    "169.254.169.254", "169.254.1.1", "fe80::1",  # link-local and the metadata service
    "100.64.0.1", "100.127.255.254",  # shared address space (CGNAT)
    "224.0.0.1", "239.255.255.250", "ff02::1",  # multicast
    "240.0.0.1", "255.255.255.255",  # reserved
    "0.0.0.0", "::",  # unspecified
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1",  # IPv4-mapped
    "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1",  # NAT64 and 6to4 of the metadata address
    "fec0::1",  # site-local
    "192.0.2.1", "198.51.100.7", "2001:db8::1",  # documentation
])
async def test_addresses_that_are_not_globally_routable_are_refused(address: str) -> None:
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(UrlRefused) as refused:
        await resolve(f"http://{host}/hook", NONE, DNS)
    assert refused.value.code == "WEBHOOK_URL_REFUSED"
    assert refused.value.status == 422
    assert address.split("::ffff:")[-1] in refused.value.reason or "embeds" in refused.value.reason


@pytest.mark.parametrize("address", [PUBLIC_V4, "8.8.8.8", PUBLIC_V6, "::ffff:8.8.8.8"])
async def test_public_addresses_pass(address: str) -> None:
    assert guard.refusal(ipaddress.ip_address(address)) is None


def test_each_refusal_names_its_class() -> None:
    reasons = {a: guard.refusal(ipaddress.ip_address(a)) or "" for a in (
        "127.0.0.1", "10.0.0.1", "169.254.169.254", "fe80::1", "100.64.0.1", "224.0.0.1",
        "240.0.0.1", "0.0.0.0", "::ffff:127.0.0.1")}
    assert "loopback" in reasons["127.0.0.1"]
    assert "private" in reasons["10.0.0.1"]
    assert "metadata" in reasons["169.254.169.254"]
    assert "link-local" in reasons["fe80::1"]
    assert "CGNAT" in reasons["100.64.0.1"]
    assert "multicast" in reasons["224.0.0.1"]
    assert "reserved" in reasons["240.0.0.1"]
    assert "unspecified" in reasons["0.0.0.0"]
    assert "embeds" in reasons["::ffff:127.0.0.1"] and "loopback" in reasons["::ffff:127.0.0.1"]


async def test_a_name_is_refused_when_any_of_its_addresses_is_private() -> None:
    with pytest.raises(UrlRefused, match=r"10\.1\.2\.3"):
        await resolve("https://sneaky.example.test/x", NONE, DNS)
    with pytest.raises(UrlRefused, match="metadata"):
        await resolve("http://meta.example.test/latest/meta-data/", NONE, DNS)


async def test_an_unresolvable_name_is_refused() -> None:
    with pytest.raises(UrlRefused, match="cannot be resolved"):
        await resolve("https://nowhere.example.test/", NONE, DNS)


@pytest.mark.parametrize(("url", "why"), [
    ("ftp://hooks.example.test/", "scheme"),
    ("file:///etc/passwd", "scheme"),
    ("hooks.example.test/x", "scheme"),
    ("http:///nohost", "host"),
    ("https://user:pass@hooks.example.test/", "credentials"),
    ("https://token@hooks.example.test/", "credentials"),
    ("https://hooks.example.test:99999/", "valid"),
    ("https://hooks.example.test/a b", "whitespace"),
    ("https://hooks.example.test/\r\nX-Injected: 1", "whitespace"),
    ("https://hooks.example.test/" + "a" * 2100, "longer"),
])
async def test_urls_of_the_wrong_form_are_refused(url: str, why: str) -> None:
    with pytest.raises(UrlRefused, match=why):
        await resolve(url, NONE, DNS)


async def test_the_allow_list_admits_127_0_0_1_and_nothing_else() -> None:
    allowed = parse_networks(["127.0.0.1/32"])
    target = await resolve("http://127.0.0.1:8080/hook?x=1", allowed, DNS)
    assert target.url == "http://127.0.0.1:8080/hook?x=1"
    assert (await resolve("http://local.example.test/", allowed, DNS)).address == "127.0.0.1"
    assert (await resolve("http://[::ffff:127.0.0.1]/", allowed, DNS)).address == "::ffff:7f00:1"
    for refused in ("http://127.0.0.2/", "http://10.0.0.1/", "http://[::1]/",
                    "http://169.254.169.254/"):
        with pytest.raises(UrlRefused, match="webhook_allowed_hosts"):
            await resolve(refused, allowed, DNS)


async def test_an_allow_listed_network_admits_its_private_range() -> None:
    allowed = parse_networks(["10.0.0.0/8"])
    assert (await resolve("http://10.20.30.40:9000/", allowed, DNS)).address == "10.20.30.40"
    assert (await resolve("https://sneaky.example.test/", allowed, DNS)).address == PUBLIC_V4


async def test_the_target_pins_the_checked_address_and_keeps_the_host_name() -> None:
    https = await resolve("https://hooks.example.test/path?q=1", NONE, DNS)
    assert https.url == f"https://{PUBLIC_V4}/path?q=1"
    assert https.host_header == "hooks.example.test"
    assert https.server_name == "hooks.example.test"  # SNI and certificate check
    http = await resolve("http://hooks.example.test:8080/p", NONE, DNS)
    assert http.url == f"http://{PUBLIC_V4}:8080/p"
    assert http.host_header == "hooks.example.test:8080"
    assert http.server_name is None
    v6 = await resolve(f"https://[{PUBLIC_V6}]:8443/", NONE, DNS)
    assert v6.url == f"https://[{PUBLIC_V6}]:8443/"
    assert v6.host_header == f"[{PUBLIC_V6}]:8443"
    assert v6.server_name is None  # an IP literal is no server name


async def test_the_system_resolver_resolves_an_ip_literal_without_dns() -> None:
    assert list(await guard.system_resolver("127.0.0.1", 80)) == ["127.0.0.1"]
