"""A database URL's secrets: what must never be logged or printed, and the URL with them masked.

A PostgreSQL URL can carry its password in two places: `postgresql://user:password@host/db` and, as libpq
and asyncpg also accept, `?password=…` (and `sslpassword=…` for an encrypted client key) in the query.
Both are masked; the host part is kept exactly as written (an IPv6 address keeps its brackets).
"""

from __future__ import annotations

from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

SECRET_PARAMETERS = frozenset({"password", "sslpassword"})
MASK = "***"


def url_secrets(url: str) -> list[str]:
    """Every password in `url`, as written and percent-decoded (a driver may echo either)."""
    parts = urlsplit(url)
    written = [parts.password or ""] + [value for name, value in _parameters(parts.query) if name in SECRET_PARAMETERS]
    return list(dict.fromkeys(form for value in written for form in (value, unquote(value), unquote_plus(value))
                              if form))


def redact(url: str) -> str:
    """`url` with every password replaced by `***`, safe for logs and `doctor`."""
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:{MASK}@{host}"
    query = "&".join(f"{name}={MASK}" if name in SECRET_PARAMETERS else item
                     for item, (name, _) in zip(parts.query.split("&"), _parameters(parts.query), strict=True))
    return urlunsplit(parts._replace(netloc=netloc, query=query if parts.query else ""))


def _parameters(query: str) -> list[tuple[str, str]]:
    """`a=1&B=2` → [("a", "1"), ("b", "2")]: names lower-cased, values as written (not decoded)."""
    return [(name.lower(), value) for name, _, value in (item.partition("=") for item in query.split("&"))]
