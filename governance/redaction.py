"""URLs as they may be shown: in an error, a log line, an audit record or a registry row.

An endpoint URL can carry its own credentials (`https://user:pass@host/v1`,
`...?api_key=...`). Those parts are replaced before the URL is written anywhere a
person or a log pipeline reads it; the scheme, host, port and path stay, so the
message still says which endpoint failed.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus, urlsplit, urlunsplit

REDACTED = "[redacted]"

# A query parameter whose name contains one of these carries a secret (api_key, access_token,
# X-Amz-Signature, client_secret, password, sig, auth, sessionid, ...).
_SECRET_PARAM = re.compile(r"key|token|secret|pass|pwd|auth|sig|credential|session", re.IGNORECASE)
# A URL inside free text (an exception message): a scheme, `://`, then up to whitespace or a
# quote, leaving out punctuation that ends a sentence ("cannot reach URL: refused").
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]*[^\s'\"<>.,:;)]")


def redact_url(url: str) -> str:
    """`url` without its userinfo and with the values of secret-looking query parameters replaced."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced IPv6 bracket: nothing of it can be shown safely
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = "&".join(_redact_param(p) for p in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_urls(text: str) -> str:
    """`text` with every URL in it passed through `redact_url` (for exception messages)."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def _redact_param(param: str) -> str:
    name, sep, _value = param.partition("=")
    return f"{name}={REDACTED}" if sep and _SECRET_PARAM.search(unquote_plus(name)) else param
