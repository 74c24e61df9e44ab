"""URLs in what resources show (repr, logs, errors): never with a password in them.

The one home of URL scrubbing (resources and the workers use it): `url_without_password` keeps the user name,
`url_without_userinfo` keeps only scheme, host, port and path.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def url_without_password(url):
    """`url` with any password in its user info replaced by ***."""
    if not isinstance(url, str) or "@" not in url:
        return url
    try:
        parts = urlsplit(url if "://" in url else "http://" + url)
        if parts.password is None:
            return url
        userinfo, _, hostport = parts.netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{hostport}"
        redacted = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
        return redacted if "://" in url else redacted.split("://", 1)[1]
    except ValueError:
        return "<unparseable url>"


def url_without_userinfo(url: str) -> str:
    """`url` as scheme://host[:port]/path: no user info, query or fragment (host[:port]/path when
    `url` has no scheme)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")) if "://" in url else netloc
