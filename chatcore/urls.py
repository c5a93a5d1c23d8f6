"""URLs shown to people: never with credentials or a query string."""
from __future__ import annotations


def display_url(url: str) -> str:
    """``url`` fit to show or log: without ``user:password@`` and without a query string."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "(invalid URL)"
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
