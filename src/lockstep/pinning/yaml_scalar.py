"""When a new YAML plain scalar must be written double-quoted: when it would not load as a
string under YAML 1.1, YAML 1.2 core or go-yaml v2 (Helm's loader), or would not parse as one
plain scalar. Hand-written: no library answers "string under all three resolvers"."""

from __future__ import annotations

import re

_SPECIAL_WORDS = {
    # YAML 1.1 and go-yaml v2 booleans, nulls; 1.2 core booleans and nulls are a subset
    "y", "yes", "n", "no", "true", "false", "on", "off", "null", "~", "<<", "=",
}
_NUMERIC = [re.compile(p) for p in (
    r"[-+]?0b[0-1_]+",  # 1.1 binary
    r"[-+]?0[0-7_]+",  # 1.1 octal
    r"[-+]?0o[0-7]+",  # 1.2 octal, go ParseInt base 0
    r"[-+]?(0|[1-9][0-9_]*)",  # decimal
    r"[-+]?0x[0-9a-fA-F_]+",  # hex
    r"[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?",  # 1.1 sexagesimal int and float
    r"[-+]?([0-9][0-9_]*)?\.[0-9_]*([eE][-+]?[0-9]+)?",  # 1.1 float as loaders read it
    r"[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+",  # 1.2 / Go exponent floats
    r"[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)",
    r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}"  # 1.1 timestamp (date, optional time)
    r"(([Tt]|[ \t]+)[0-9]{1,2}:[0-9]{2}:[0-9]{2}(\.[0-9]*)?"
    r"([ \t]*(Z|[-+][0-9]{1,2}(:[0-9]{2})?))?)?",
)]
_INDICATORS = set("-?:,[]{}#&*!|>'\"%@`")


def needs_quotes(text: str) -> bool:
    """Whether `text`, written as a plain scalar, could load as something other than that
    string (a number, bool, null, timestamp) or would not be one plain scalar at all."""
    if not text or text != text.strip(" \t") or text[0] in _INDICATORS:
        return True
    if text.lower() in _SPECIAL_WORDS:
        return True
    if ": " in text or " #" in text or text.endswith(":") or "\t" in text:
        return True
    if any(c in text for c in "\n\r") or any(not c.isprintable() for c in text):
        return True
    if any(c in text for c in ",[]{}"):  # flow indicators: unsafe inside flow collections
        return True
    if any(p.fullmatch(text) for p in _NUMERIC):
        return True
    try:  # whatever Go's ParseFloat / Python's float accept (inf, nan, 1_0.5, …)
        float(text.replace("_", ""))
    except ValueError:
        return False
    return True


def double_quoted(text: str) -> str:
    """`text` as a YAML double-quoted scalar."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def requote(text: str, quoting: str) -> str:
    """`text` escaped for the inside of a scalar of the given quoting."""
    if quoting == "double":
        return text.replace("\\", "\\\\").replace('"', '\\"')
    if quoting == "single":
        return text.replace("'", "''")
    return text
