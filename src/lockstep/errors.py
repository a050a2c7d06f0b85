"""The exception hierarchy: every error a user can cause carries a message, a hint and an exit code.

The CLI prints `error: <message> (<hint>)` on one line and exits with `exit_code`; no traceback.
"""

from __future__ import annotations

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_PAUSED = 3  # `queue run --until-empty` stopped: the queue is paused with items waiting


class LockstepError(Exception):
    """Base of every error lockstep reports to a user."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and hint as a single line (newlines folded)."""
        text = self.message if not self.hint else f"{self.message} ({self.hint})"
        return " ".join(text.split())


class UsageError(LockstepError):
    """Bad input: an argument, a config file or a name; nothing was changed."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """lockstep.toml or the manifest is malformed or inconsistent."""


class ValidationError(UsageError, ValueError):
    """A name, version, ref or path failed validation before use.

    Also a ValueError, so pydantic reports it with the key path where it happened.
    """


class NotFoundError(UsageError):
    """Something named by the user does not exist (item, component, tag, configuration)."""


class StateError(LockstepError):
    """The request is valid but the current state forbids it (e.g. cancelling a landing item)."""


class GitError(LockstepError):
    """A git command failed; the message carries its redacted stderr."""


class StageError(LockstepError):
    """A stage could not be prepared or run (an infrastructure failure)."""
