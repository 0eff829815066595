"""The one scrubber every surface goes through: logs, errors, printed config, audit and state rows.

Three rules, applied to any text (see docs/security.md):
- a URL's userinfo password (``scheme://user:PASSWORD@host``) is masked, whether the URL parses or not;
- secret-looking query or DSN parameters (``?password=``, ``&pwd=``, ``api_key=``, ``token=``...) are
  masked;
- every registered secret value (the MM API key, each database password, whatever their source) is
  masked, in clear and in its URL-encoded forms.

A leaf module on purpose: adapters, config and the runtime all import it, and it imports nothing of
erpsync.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from urllib.parse import quote, quote_plus, unquote

MASK = "**********"
# Keys whose values are secrets wherever they appear (log fields, config keys, validation errors).
SECRET_KEY_WORDS = ("api_key", "apikey", "password", "passwd", "authorization", "secret", "token")
MIN_SECRET_LENGTH = 4

# scheme://user:password@ - greedy up to the last "@" of the token, so a password holding an
# unencoded "@", ":" or "/" (a URL that does not parse) is masked whole.
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@'\"<>]*:)(?P<secret>[^\s'\"<>]*)@")
# ?password=... / &pwd=... / ;key=... in a URL, and password=... in a libpq-style DSN.
_PARAM_WORDS = r"password|passwd|pwd|pass|api[_-]?key|apikey|key|secret|token|access_token|auth"
_QUERY_PARAM = re.compile(rf"(?P<head>[?&;](?:{_PARAM_WORDS})=)(?P<secret>[^&#\s'\"<>]*)", re.IGNORECASE)
# no spaces around "=": "password = (not set)" in printed config is not a DSN
_DSN_PARAM = re.compile(
    r"(?P<head>(?:^|\s)(?:password|passwd|pwd)=)(?P<secret>'[^']*'|[^\s'\"]+)", re.IGNORECASE
)

_secrets: set[str] = set()
_ordered: list[str] = []
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember a secret so it is masked wherever it appears, also URL-encoded or URL-decoded."""
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    forms = {value, quote(value, safe=""), quote_plus(value, safe=""), quote(value), unquote(value)}
    with _lock:
        new = {form for form in forms if len(form) >= MIN_SECRET_LENGTH} - _secrets
        if new:
            _secrets.update(new)
            # longest first, so a secret that contains another one is masked whole
            _ordered[:] = sorted(_secrets, key=len, reverse=True)


def register_url_secrets(url: str | None) -> None:
    """Register the userinfo password and secret query parameters of a URL, parseable or not."""
    if not url:
        return
    for pattern in (_USERINFO, _QUERY_PARAM, _DSN_PARAM):
        for match in pattern.finditer(url):
            register_secret(match.group("secret").strip("'"))


def register_secrets(values: Iterable[str | None]) -> None:
    for value in values:
        register_secret(value)


def is_secret_key(key: str) -> bool:
    """True for a config key or log field whose value is a secret (``mm.api_key``, ``password``...)."""
    lowered = key.lower()
    return any(word in lowered for word in SECRET_KEY_WORDS)


def scrub(text: str) -> str:
    """`text` with URL passwords, secret parameters and every registered secret masked."""
    if not text:
        return text
    text = _USERINFO.sub(lambda m: f"{m.group('head')}{MASK}@", text)
    text = _QUERY_PARAM.sub(lambda m: f"{m.group('head')}{MASK}", text)
    text = _DSN_PARAM.sub(lambda m: f"{m.group('head')}{MASK}", text)
    with _lock:
        secrets = list(_ordered)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def scrub_value(key: str, value: object) -> object:
    """A log field or data value made safe: masked whole under a secret-looking key, else scrubbed."""
    if is_secret_key(key) and value not in (None, ""):
        return MASK
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, BaseException):
        return scrub(f"{type(value).__name__}: {value}")
    return value
