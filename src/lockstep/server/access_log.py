"""Logging for `lockstep serve`: uvicorn's access lines with any credential that could reach
them (a token in a query string, a Bearer value, a signature) replaced by `***`."""

from __future__ import annotations

import logging
import re
from typing import Any

_SECRET = re.compile(
    r"(?i)((?:access_token|token|secret|signature|password|auth)=)[^&\s\"']+"
    r"|(bearer\s+)[^\s\"']+"
    r"|(sha256=)[0-9a-f]{8,}")


def redact(text: str) -> str:
    """`text` with every credential-looking value masked."""
    return _SECRET.sub(lambda m: (m.group(1) or m.group(2) or m.group(3)) + "***", text)


class RedactFilter(logging.Filter):
    """Masks credentials in a record's message and arguments before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drops it."""
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's logging configuration with the redacting filter on every handler."""
    from uvicorn.config import LOGGING_CONFIG

    cfg: dict[str, Any] = {**LOGGING_CONFIG}
    cfg["filters"] = {"redact": {"()": f"{__name__}.RedactFilter"}}
    cfg["handlers"] = {name: {**h, "filters": ["redact"]}
                       for name, h in LOGGING_CONFIG["handlers"].items()}
    cfg["loggers"] = {**LOGGING_CONFIG["loggers"],
                      "lockstep": {"handlers": ["default"], "level": "INFO",
                                   "propagate": False}}
    return cfg
