"""Which database holds the queue: `[store] url` or LOCKSTEP_STORE_URL, checked and redacted.

Unset means the SQLite file in the workspace; `postgresql://` and `postgresql+psycopg://` URLs
mean a PostgreSQL server reached with psycopg. No message ever shows a URL's password. Standard
library only: lockstep.toml is checked by commands that never load the store (or SQLAlchemy).
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from lockstep.errors import ConfigError, ValidationError

ENV_VAR = "LOCKSTEP_STORE_URL"
DRIVER = "postgresql+psycopg"
FORMS = ("postgresql://USER@HOST[:PORT]/DATABASE or postgresql+psycopg://USER@HOST[:PORT]/DATABASE"
         " (libpq options such as ?sslmode=require may follow); leave it unset for the SQLite "
         "store in .lockstep/queue.db")
_SCHEMES = ("postgresql", DRIVER)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@")
_QUERY_SECRET = re.compile(r"(?i)(?P<key>(?:^|[?&;])\s*password\s*=)[^&;\s]*")


def redact(text: str) -> str:
    """Hide the password of any URL in text (`user:PASSWORD@` and `password=…` options)."""
    text = _USERINFO.sub(r"\g<scheme>\g<user>:***@", text)
    return _QUERY_SECRET.sub(r"\g<key>***", text)


@dataclass(frozen=True)
class StoreTarget:
    """A checked PostgreSQL URL: the text SQLAlchemy connects with (psycopg driver), whether it
    carries a password, and the redacted form every message shows."""

    url: str
    display: str
    has_password: bool


def parse(text: str, where: str) -> StoreTarget:
    """Check a store URL; a ValidationError (one line, exit 2, password hidden) names `where`
    (the variable it came from, if any) and the URL forms that work."""
    raw = text.strip()
    shown = redact(raw)
    where = f"{where}: " if where else ""
    scheme = raw.split("://", 1)[0].lower() if "://" in raw else ""
    if not scheme:  # not a URL at all: it might be anything, a bare password included
        raise ValidationError(f"{where}the store URL has no scheme (value not shown)",
                              f"use {FORMS}")
    if scheme not in _SCHEMES:
        raise ValidationError(f"{where}unsupported store URL {shown!r} (scheme {scheme!r})",
                              f"use {FORMS}")
    parts = urllib.parse.urlsplit(raw)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        raise ValidationError(f"{where}store URL {shown!r} has an invalid port",
                              f"use {FORMS}") from None
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    if parts.fragment or any(not k for k in query):
        raise ValidationError(f"{where}cannot parse store URL {shown!r}", f"use {FORMS}")
    if not parts.path.strip("/"):
        raise ValidationError(f"{where}store URL {shown!r} names no database", f"use {FORMS}")
    if not parts.hostname and "host" not in query:
        raise ValidationError(f"{where}store URL {shown!r} names no host", f"use {FORMS}")
    has_password = parts.password is not None or any(k.lower() == "password" for k in query)
    url = DRIVER + raw[len(scheme):]
    return StoreTarget(url, shown, has_password)


def check_configured(text: str | None) -> str | None:
    """Validate `[store] url` from lockstep.toml: a URL form above and no password in it (the
    file is committed and every stage reads it; a password belongs in the environment)."""
    if text is None:
        return None
    target = parse(text, "")
    if target.has_password:
        raise ValidationError(
            f"the store URL {target.display!r} holds a password, but lockstep.toml is "
            "committed and every stage can read it",
            f"drop it from the URL and use PGPASSWORD, a ~/.pgpass entry, or the whole URL "
            f"in {ENV_VAR}")
    return text


def effective(configured: str | None,
              environ: Mapping[str, str] | None = None) -> StoreTarget | None:
    """The PostgreSQL store to use: LOCKSTEP_STORE_URL when set (it wins over `[store] url`),
    else the configured URL; None means the SQLite file."""
    env = os.environ if environ is None else environ
    from_env = env.get(ENV_VAR, "").strip()
    source, text = (ENV_VAR, from_env) if from_env else ("lockstep.toml: store.url", configured)
    if not text:
        return None
    try:
        return parse(text, source)
    except ValidationError as exc:
        raise ConfigError(exc.message, exc.hint) from None
