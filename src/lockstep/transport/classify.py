"""Classifying a failed git child (spec/release.md §4.2) and describing its cause in one line.

The rules are ordered; the first that applies wins: final (a refusal no other URL can fix),
then transport or authentication (try the next URL), then final for anything else.
"""

from __future__ import annotations

import enum
import re

from lockstep.transport.child import Child
from lockstep.transport.redact import Redactor, escape_controls, quote

MAX_CAUSE = 2000
_FINAL = re.compile(
    r"\[rejected\]|\[remote rejected\]|REMOTE HOST IDENTIFICATION HAS CHANGED"
    r"|transport '.*' not allowed|not our ref|unadvertised object", re.IGNORECASE)
_TRANSPORT = re.compile(
    r"terminal prompts disabled|could not read (?:Username|Password)|Authentication failed"
    r"|returned error: (?:401|403)|repository '.*' not found|Repository not found"
    r"|Could not resolve host(?:name)?|Couldn't connect to server"
    r"|Connection (?:refused|timed out|reset|closed)|timed out|Operation too slow"
    r"|server certificate verification failed|SSL certificate problem|SSL_|gnutls"
    r"|Permission denied \(publickey|Host key verification failed|remote end hung up"
    r"|Could not read from remote repository", re.IGNORECASE)
_HOST_KEY_CHANGED = re.compile(r"REMOTE HOST IDENTIFICATION HAS CHANGED", re.IGNORECASE)
# git's generic lines around the real cause: advice, and the summary every ssh failure ends with.
_NOISE = re.compile(
    r"^(?:hint:|Please make sure you have the correct access rights|and the repository exists"
    r"|Warning: Permanently added )", re.IGNORECASE)
_GENERIC = re.compile(r"^fatal: Could not read from remote repository\.?$", re.IGNORECASE)


class Verdict(enum.Enum):
    """What a failure means for the next URL."""

    FINAL = "final"  # no other URL can fix it: report it
    TRANSPORT = "transport"  # authentication or transport: try the next URL


def classify(child: Child) -> Verdict:
    """Apply §4.2's ordered rules to a failed child (stdout too: `push --porcelain` reports
    rejections there)."""
    text = _text(child)
    if _FINAL.search(text):
        return Verdict.FINAL
    if child.timed_out or (child.returncode == 128 and _TRANSPORT.search(text)):
        return Verdict.TRANSPORT
    return Verdict.FINAL


def cause(child: Child, redact: Redactor, *, with_remote: bool = True,
          limit: int = MAX_CAUSE) -> str:
    """The failure's cause on one line: git's and ssh's own lines without advice, the `fatal:`
    prefix kept, control characters escaped, credentials redacted, bounded."""
    lines = [" ".join(line.split()) for line in child.stderr.decode(errors="replace").splitlines()]
    lines = [line for line in lines if line and (with_remote or not line.startswith("remote:"))]
    if not _HOST_KEY_CHANGED.search("\n".join(lines)):  # that warning is shown in full
        lines = [line for line in lines if not _NOISE.match(line)]
        specific = [line for line in lines if not _GENERIC.match(line)]
        lines = specific or lines
    text = "; ".join(dict.fromkeys(lines)) or f"exit code {child.returncode}"
    if child.timed_out:
        text = f"timed out after {child.timeout:g}s, killed" + (f" ({text})" if lines else "")
    text = escape_controls(redact(text)).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def remote_lines(child: Child, redact: Redactor) -> list[str]:
    """What the remote said (`remote:` lines: hook output), padding stripped, redacted, quoted
    with control characters escaped."""
    said = []
    for line in child.stderr.decode(errors="replace").splitlines():
        if line.startswith("remote:"):
            text = line[len("remote:"):].rstrip()
            text = text.removesuffix("\x1b[K").rstrip()  # git's erase-to-end-of-line padding
            said.append(quote(redact(text.removeprefix(" "))))
    return said


def _text(child: Child) -> str:
    return (child.stderr + b"\n" + child.stdout).decode(errors="replace")
