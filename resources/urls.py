"""URLs in what resources show (repr, logs, errors): never with a password in them."""

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
