"""Local-only mode: may the add-on send a camera's scene to this LLM server?

With ``privacy.local_only`` on, the scene descriptions (who is at the door, when the house is
empty) must not leave the home network, so the LLM server has to be on this machine or the
private LAN. A URL's host is judged by the *addresses* it reaches, never by its spelling: a
``.local`` or ``.lan`` name is resolved and its addresses checked, and a name counts as local
only when every address it resolves to is local (the connection may use any of them). The
check runs twice: when the configuration is loaded (a clear start-up error for a server that
is surely outside) and on every connection, inside the HTTP client's resolver, so a name that
later resolves to a public address is refused before a socket is opened.

Local means (:data:`LOCAL_NETWORKS`): loopback (127.0.0.0/8, ::1), the RFC 1918 private ranges
(10/8, 172.16/12, 192.168/16), link-local (169.254/16, fe80::/10) and IPv6 unique local
addresses (fc00::/7). Deliberately *not* local: the carrier-grade NAT range 100.64.0.0/10
(RFC 6598) — it is shared between an ISP's customers, and the overlay networks that use it
(Tailscale) carry traffic across the internet to another site — and the unspecified address
(0.0.0.0, ::), which is no server's address. An IPv4-mapped IPv6 address is judged as its IPv4
address.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence

from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

__all__ = [
    "LOCAL_NETWORKS",
    "LocalOnlyResolver",
    "NotLocalError",
    "Resolve",
    "UnresolvedHostError",
    "check_addresses",
    "check_literal",
    "check_url",
    "is_local",
    "resolve_blocking",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LOCAL_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(
    ipaddress.ip_network(net)
    for net in (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "::1/128",
        "fe80::/10",
        "fc00::/7",
    )
)
"""Where a local-only add-on may send a scene (see the module doc for what is left out)."""

Resolve = Callable[[str, int], Awaitable[Sequence[str]]]
"""``(host, port) -> addresses``: the name lookup the client's resolver checks (a seam for
tests, which map names to chosen addresses without touching the system's resolver)."""


class NotLocalError(OSError):
    """A host that is, or resolves to, an address outside loopback and the private LAN.

    An ``OSError`` so that aiohttp's connector reports it like any failed lookup (a
    ``ClientConnectorDNSError`` carrying this message) and no socket is opened.
    """

    def __init__(self, message: str) -> None:
        super().__init__(errno.EACCES, message)


class UnresolvedHostError(NotLocalError):
    """A name that did not resolve: its locality is unknown, so it is refused too."""


def _address(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])  # fe80::1%eth0: drop the zone
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_local(address: str) -> bool:
    """Whether ``address`` (a literal IPv4/IPv6 address) is in :data:`LOCAL_NETWORKS`."""
    parsed = _address(address)
    return parsed is not None and any(parsed in net for net in LOCAL_NETWORKS)


def check_addresses(host: str, addresses: Sequence[str]) -> None:
    """Refuse ``host`` unless it has addresses and every one of them is local."""
    if not addresses:
        raise UnresolvedHostError(f"{host!r} resolved to no address; local-only mode refuses it")
    for address in addresses:
        if not is_local(address):
            shown = host if host == address else f"{host!r} resolves to {address}, which"
            raise NotLocalError(
                f"{shown} is outside loopback and the private LAN; local-only mode refuses it"
            )


def check_literal(host: str) -> bool:
    """Check ``host`` when it is an address literal; False when it is a name to resolve."""
    if _address(host.strip("[]")) is None:
        return False
    check_addresses(host, [host.strip("[]")])
    return True


def resolve_blocking(host: str, port: int) -> list[str]:
    """The system resolver's addresses for ``host`` (blocking: for load-time checks only)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise UnresolvedHostError(f"{host!r} does not resolve ({err})") from None
    return [str(info[4][0]) for info in infos]


def check_url(url: str, *, resolve: Callable[[str, int], Sequence[str]]) -> None:
    """Refuse ``url`` unless its host is local (a literal, or a name resolved by ``resolve``)."""
    parsed = URL(url.strip())
    host = parsed.host or ""
    if not check_literal(host):
        check_addresses(host, resolve(host, parsed.port or 0))


async def _system_resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise UnresolvedHostError(f"{host!r} does not resolve ({err})") from None
    return [str(info[4][0]) for info in infos]


class LocalOnlyResolver(AbstractResolver):
    """aiohttp's resolver for a local-only client: names resolve, then every address is checked.

    aiohttp skips the resolver for address literals, so the client checks those itself
    (:func:`check_literal`) before it connects.
    """

    def __init__(self, resolve: Resolve | None = None) -> None:
        self._resolve = resolve or _system_resolve

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = list(await self._resolve(host, port))
        check_addresses(host, addresses)
        results: list[ResolveResult] = []
        for address in addresses:
            parsed = _address(address)
            kind = socket.AF_INET6 if isinstance(parsed, ipaddress.IPv6Address) else socket.AF_INET
            if family not in (socket.AF_UNSPEC, kind):
                continue
            results.append(
                {
                    "hostname": host,
                    "host": str(parsed),
                    "port": port,
                    "family": kind,
                    "proto": 0,
                    "flags": socket.AI_NUMERICHOST,
                }
            )
        if not results:
            raise UnresolvedHostError(f"{host!r} has no address of the connector's family")
        return results

    async def close(self) -> None:
        """Nothing to release: the lookups hold no resources between calls."""
