"""Where HTTP tools may send their calls: the hosts TOOLS_HTTP_ALLOWED_HOSTS allows, and the addresses they may
resolve to.

TOOLS_HTTP_ALLOWED_HOSTS is a comma-separated list; empty (the default) allows no host, so no HTTP tool can be
created until an operator says where they may go. Each entry is one of:

* ``api.example.com`` — that host name (case-insensitive, a final dot ignored);
* ``*.example.com`` — any name under example.com (not example.com itself);
* ``*`` — any host;
* ``203.0.113.7``, ``203.0.113.0/24``, ``2001:db8::/32`` — an IP address or network: a URL whose host is such an
  address is allowed, and the addresses inside it may be connected to even when they are not public (below).

Whatever the host, the address connected to must be a public one. Refused unless explicitly allowed:

* loopback (127.0.0.0/8, ::1), private (10/8, 172.16/12, 192.168/16, fc00::/7) and the other ranges that are not
  globally routable (100.64/10, documentation and benchmarking ranges, ...): allowed by
  TOOLS_HTTP_ALLOW_PRIVATE_NETWORKS=true, or by listing their network;
* link-local (169.254.0.0/16 with the cloud metadata endpoint 169.254.169.254, fe80::/10), unspecified (0.0.0.0,
  ::) and multicast: allowed only by listing their network (TOOLS_HTTP_ALLOW_PRIVATE_NETWORKS does not: a metadata
  endpoint hands out the host's credentials).

An IPv4-mapped IPv6 address (::ffff:127.0.0.1) is judged as the IPv4 address it carries. An IPv6 address that
carries an IPv4 address by one of the transition mechanisms (IPv4-compatible ::a.b.c.d, NAT64 64:ff9b::/96 and the
local-use 64:ff9b:1::/48, 6to4 2002::/16, Teredo 2001::/32 with its server and its client, the bitwise NOT of the
last 32 bits, and ISATAP's ...:0:5efe:a.b.c.d) reaches that IPv4 address through a gateway: both are judged, and
both must pass (so 64:ff9b::7f00:1 is refused as 127.0.0.1 is). The local-use NAT64 prefix is not publicly
routable itself.

Streamable HTTP MCP servers follow the same rules with their own settings, TOOLS_MCP_ALLOWED_HOSTS (default '*')
and TOOLS_MCP_ALLOW_PRIVATE_NETWORKS: at registration, before each session, and at every TCP connection their client
opens (services.tools.mcp.connection connects only to addresses `resolve` checked).

When it is checked: CreateTool checks the URL's host against the list and, for a literal address, the address
rules (a name is not resolved then: what it resolves to may change). Every call checks both again (the settings
may have changed since), resolving the name first, and connects to an address it checked (services.tools.http.calls
pins the connection to it), so a name that resolves to a public address at creation and to 127.0.0.1 later (DNS
rebinding) is refused at that call.
"""

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from services.common.errors import FailedPrecondition, Unavailable

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The settings named in messages, so that an operator knows what to change (HTTP tools' by default).
ALLOWED_HOSTS_SETTING = "TOOLS_HTTP_ALLOWED_HOSTS"
ALLOW_PRIVATE_SETTING = "TOOLS_HTTP_ALLOW_PRIVATE_NETWORKS"

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")
#: ISATAP's interface identifier: 0000:5efe or, with the universal/local bit, 0200:5efe, then the IPv4 address.
_ISATAP_IDS = (0x00005EFE, 0x02005EFE)


def _plain(address: IpAddress) -> IpAddress:
    """The IPv4 address an IPv4-mapped IPv6 address carries; any other address as it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def embedded_ipv4(address: IpAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries by a transition mechanism (see the module's docstring); a
    gateway or tunnel would deliver to them."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    value = int(address)
    last32 = ipaddress.IPv4Address(value & 0xFFFFFFFF)
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if value >> 32 == 0 and value > 1:  # IPv4-compatible (:: and ::1 are themselves)
        found.append(last32)
    if address in _NAT64 or address in _LOCAL_NAT64:
        found.append(last32)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)  # the server, and the client (the bitwise NOT of the last 32 bits)
    if (value >> 32) & 0xFFFFFFFF in _ISATAP_IDS:
        found.append(last32)
    return list(dict.fromkeys(found))


def url_host(url: httpx.URL) -> str:
    """The URL's host as it is resolved: IDNA-encoded, lowercase, without IPv6 brackets."""
    return url.raw_host.decode("ascii").strip("[]").lower()


def parse_address(host: str) -> IpAddress | None:
    """The IP address a URL's host is (brackets of IPv6 removed), or None for a name."""
    try:
        return _plain(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def address_kind(address: IpAddress) -> str | None:
    """What makes `address` one that is refused by default ("loopback", "link-local", ...), or None when it is a
    public unicast address."""
    address = _plain(address)
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if not address.is_global or (isinstance(address, ipaddress.IPv6Address) and address in _LOCAL_NAT64):
        return "not publicly routable"
    return None


#: The kinds TOOLS_HTTP_ALLOW_PRIVATE_NETWORKS does not allow: only listing their network does.
_NEVER_BY_DEFAULT = frozenset({"link-local", "unspecified", "multicast"})


@dataclass(frozen=True)
class DestinationPolicy:
    """The allow list and the address rules (see the module's docstring)."""

    #: Host names allowed exactly (lowercase, without a final dot).
    names: frozenset[str] = frozenset()
    #: ".example.com" for each "*.example.com".
    suffixes: tuple[str, ...] = ()
    #: "*" was listed.
    any_host: bool = False
    #: The listed addresses and networks.
    networks: tuple[IpNetwork, ...] = ()
    #: TOOLS_HTTP_ALLOW_PRIVATE_NETWORKS.
    allow_private_networks: bool = False
    #: Who is bound, and the settings that bind them, as messages name them (HTTP tools', or MCP servers').
    subject: str = "HTTP tools"
    hosts_setting: str = ALLOWED_HOSTS_SETTING
    private_setting: str = ALLOW_PRIVATE_SETTING

    @classmethod
    def parse(
        cls,
        entries: Iterable[str],
        allow_private_networks: bool = False,
        *,
        subject: str = "HTTP tools",
        hosts_setting: str = ALLOWED_HOSTS_SETTING,
        private_setting: str = ALLOW_PRIVATE_SETTING,
    ) -> "DestinationPolicy":
        """The policy of an allow list's entries; ValueError naming an entry that is none of the forms."""
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[IpNetwork] = []
        any_host = False
        for raw in entries:
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            if entry == "*":
                any_host = True
                continue
            try:
                network = ipaddress.ip_network(entry.strip("[]"), strict=False)
            except ValueError:
                pass
            else:
                networks.append(network)
                continue
            pattern = entry[2:] if entry.startswith("*.") else entry
            if not _is_host_name(pattern):
                raise ValueError(
                    f"{hosts_setting}: {raw.strip()!r} is not a host name, '*.' followed by one, '*', an IP "
                    "address or a network (CIDR)"
                )
            if entry.startswith("*."):
                suffixes.append("." + pattern)
            else:
                names.add(pattern)
        return cls(
            frozenset(names), tuple(suffixes), any_host, tuple(networks), allow_private_networks, subject,
            hosts_setting, private_setting,
        )

    def host_problem(self, host: str) -> str | None:
        """Why a URL's host is not allowed (without resolving it), or None when it is."""
        host = host.lower().rstrip(".")
        if not (self.any_host or self.names or self.suffixes or self.networks):
            return f"{self.hosts_setting} is empty, so {self.subject} may reach no host; list '{host}' there"
        address = parse_address(host)
        if address is not None:
            if not (self.any_host or self._listed(address)):
                return f"the address {address} is not in {self.hosts_setting} (list it, or its network)"
            return self.address_problem(host, address)
        if self.any_host or host in self.names or any(host.endswith(suffix) for suffix in self.suffixes):
            return None
        return f"the host '{host}' is not in {self.hosts_setting} (list it, or '*.' and its domain)"

    def url_problem(self, url: str) -> str | None:
        """Why a URL's host is not allowed (host_problem), or None when it is; a URL without a host is not."""
        try:
            host = url_host(httpx.URL(url))
        except (httpx.InvalidURL, UnicodeError):
            host = ""
        return self.host_problem(host) if host else f"{url!r} has no host"

    def address_problem(self, host: str, address: IpAddress) -> str | None:
        """Why `host`'s address `address` may not be connected to, or None when it may: the address, and every IPv4
        address it carries (embedded_ipv4), must each be public, listed, or private with private networks
        allowed."""
        address = _plain(address)
        by_name = parse_address(host) is None
        for reached in (address, *embedded_ipv4(address)):
            kind = address_kind(reached)
            if kind is None or self._listed(reached):
                continue
            if self.allow_private_networks and kind not in _NEVER_BY_DEFAULT:
                continue
            what = f"'{host}' resolves to {address}," if by_name else f"{address} is"
            if reached != address:
                what = f"'{host}' resolves to {address}, which carries" if by_name else f"{address} carries"
                what += f" {reached},"
            what += f" a {kind} address"
            how = f"list its network in {self.hosts_setting}"
            if kind not in _NEVER_BY_DEFAULT:
                how = f"set {self.private_setting}=true or {how}"
            return f"{what}, which {self.subject} may not reach ({how})"
        return None

    async def resolve(self, host: str, port: int) -> list[IpAddress]:
        """The addresses `host` resolves to, every one of them checked; FailedPrecondition when one is not
        allowed (a name with one public and one private address is refused whole: either may be the one
        connected to), Unavailable when the name does not resolve."""
        problem = self.host_problem(host)
        if problem is not None:
            raise FailedPrecondition(problem)
        literal = parse_address(host)
        if literal is not None:
            return [literal]
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise Unavailable(f"the host '{host}' could not be resolved: {exc.strerror or exc}") from None
        addresses: list[IpAddress] = []
        for family, _, _, _, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            # An IPv6 sockaddr may carry a scope ("fe80::1%eth0"); the address is before the "%".
            address = _plain(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]))
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise Unavailable(f"the host '{host}' resolved to no IP address")
        for address in addresses:
            problem = self.address_problem(host, address)
            if problem is not None:
                raise FailedPrecondition(problem)
        return addresses

    def _listed(self, address: IpAddress) -> bool:
        return any(address.version == network.version and address in network for network in self.networks)


def _is_host_name(value: str) -> bool:
    labels = value.split(".")
    return 0 < len(value) <= 253 and all(
        0 < len(label) <= 63 and label[0] != "-" and label[-1] != "-"
        and all(ch.isascii() and (ch.isalnum() or ch in "-_") for ch in label)
        for label in labels
    )
