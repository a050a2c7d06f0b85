"""Redaction of credentials and escaping of remote text, for every message the transport builds.

Secrets are URL passwords (and whole userinfo on http(s), where a user name may be a token),
`Authorization` values, the configured secret values and the base64 of `user:password`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from urllib.parse import quote as url_quote

MASK = "***"
# http(s) userinfo can be a bare token: hide it whole. Elsewhere (ssh://git@…) only a password.
_HTTP_USERINFO = re.compile(r"(?i)\b(https?://)[^/\s@]*(?:@[^/\s@]*)*@")
_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*):[^/\s]*@")
_AUTH_HEADER = re.compile(r"(?i)(authorization:\s*)(?:([a-z][a-z0-9_-]*)\s+)?[^\s\"']+")


class Redactor:
    """Replaces known secrets, and anything shaped like a credential, with `***`."""

    def __init__(self, secrets: Iterable[str] = (),
                 pairs: Iterable[tuple[str, str]] = ()) -> None:
        forms: set[str] = {s for s in secrets if s}
        for user, password in pairs:
            if not password:
                continue
            forms.add(password)
            raw = f"{user}:{password}".encode()
            forms.add(base64.b64encode(raw).decode())
            forms.add(base64.urlsafe_b64encode(raw).decode())
            forms.add(url_quote(password, safe=""))
        # Longest first, so a secret that contains another is replaced whole.
        self._forms = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        """`text` with every secret form and credential-shaped span masked."""
        for form in self._forms:
            text = text.replace(form, MASK)
        text = _HTTP_USERINFO.sub(rf"\g<1>{MASK}@", text)
        text = _PASSWORD.sub(rf"\g<1>:{MASK}@", text)
        return _AUTH_HEADER.sub(
            lambda m: f"{m.group(1)}{m.group(2) + ' ' if m.group(2) else ''}{MASK}", text)


def escape_controls(text: str) -> str:
    """Control characters (C0 but newline, DEL, C1) as `\\xNN`, so remote text cannot drive
    the terminal (colours, cursor moves, a fake prompt)."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\n":
            out.append(ch)
        elif ch == "\t":
            out.append("\\t")
        elif code < 32 or code == 127 or 128 <= code < 160:
            out.append(f"\\x{code:02x}")
        else:
            out.append(ch)
    return "".join(out)


def quote(text: str) -> str:
    """Remote text in double quotes, backslashes and quotes escaped, controls as `\\xNN`:
    what the remote said, unambiguous and inert."""
    return '"' + escape_controls(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'
