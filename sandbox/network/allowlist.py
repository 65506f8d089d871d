"""Host names an agent may reach through the run's proxy.

Entries:

- ``api.example.com``: that host, on any port (case does not matter, nor a trailing dot;
  international names are compared in their IDNA form);
- ``*.example.com``: any name below ``example.com`` -- not ``example.com`` itself, and
  never an IP address;
- ``10.0.0.5`` or ``[fd00::1]``: an IP address, reachable only when listed exactly;
- any of these followed by ``:PORT``: that port only.

``*`` alone is refused (that is the ``full`` policy), and so are URLs, paths and inner
wildcards: an entry that does not mean what it seems is bad input, not a silent miss.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


def is_ip(host: str) -> bool:
    """Whether ``host`` is an IP address literal (no brackets)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_public(address: str) -> bool:
    """Whether ``address`` is a globally routable unicast address (v4-mapped v6 seen as v4)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def canonical_host(host: str) -> str:
    """``host`` in the one spelling the allowlist compares; ValueError if it is not a host.

    Numeric names a resolver would read as an IPv4 address without being a dotted quad
    (``2130706433``, ``0x7f.1``) are refused: they are how an allowlist is usually fooled.
    """
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if not text:
        raise ValueError("empty host")
    if is_ip(text):
        ip = ipaddress.ip_address(text)
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
            raise ValueError(f"scoped IPv6 address {host!r}")
        return ip.compressed
    text = text.removesuffix(".").lower()
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"bad host name {host!r}") from None
    labels = text.split(".")
    if len(text) > 253 or any(not label or len(label) > 63 or set(label) - _LABEL_CHARS
                              for label in labels):
        raise ValueError(f"bad host name {host!r}")
    last = labels[-1]
    if last.isdigit() or (last.startswith("0x") and set(last[2:]) <= set("0123456789abcdef")):
        raise ValueError(f"numeric host name {host!r} that is not an IP address")
    return text


def split_host_port(value: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address."""
    text = value.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise ValueError(f"unbalanced '[' in {value!r}")
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise ValueError(f"unexpected text after ']' in {value!r}")
        return host, parse_port(rest[1:], value)
    if text.count(":") > 1:
        return text, None
    host, colon, port = text.partition(":")
    return (host, parse_port(port, value)) if colon else (host, None)


def parse_port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port in {whole!r}")
    return int(text)


@dataclass(frozen=True)
class _Rule:
    host: str          # canonical; for a wildcard the part after "*."
    wildcard: bool
    port: int | None


class Allowlist:
    """The hosts one sandbox may reach (see the module docstring for the entries)."""

    def __init__(self, entries: Iterable[str]) -> None:
        rules = []
        for entry in entries:
            text = str(entry).strip()
            if any(c in text for c in "/@") or "://" in text:
                raise ValueError(f"network allow entry {entry!r}: give a host name, not a URL")
            host, port = split_host_port(text)
            wildcard = host.startswith("*.")
            host = host[2:] if wildcard else host
            if "*" in host:
                raise ValueError(f"network allow entry {entry!r}: only a leading '*.' is a "
                                 "wildcard (the 'full' policy allows everything)")
            host = canonical_host(host)
            if wildcard and (is_ip(host) or "." not in host):
                raise ValueError(f"network allow entry {entry!r}: wildcard too broad")
            rules.append(_Rule(host, wildcard, port))
        self._rules = tuple(rules)

    @property
    def entries(self) -> tuple[str, ...]:
        """The entries, canonical."""
        out = []
        for r in self._rules:
            host = f"*.{r.host}" if r.wildcard else f"[{r.host}]" if ":" in r.host else r.host
            out.append(host if r.port is None else f"{host}:{r.port}")
        return tuple(out)

    def allows(self, host: str, port: int) -> bool:
        """Whether ``host`` may be reached on ``port``."""
        try:
            name = canonical_host(host)
        except ValueError:
            return False
        literal = is_ip(name)
        for r in self._rules:
            if r.port is not None and r.port != port:
                continue
            if r.wildcard:
                if not literal and name.endswith("." + r.host):
                    return True
            elif name == r.host:
                return True
        return False
