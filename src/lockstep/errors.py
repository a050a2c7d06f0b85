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

    def shown(self) -> str:
        """What the CLI prints after `error: `: one line, unless the error's lines matter."""
        return self.one_line()


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


class NamedError(LockstepError):
    """An error whose class name is part of what the user reads (`TagConflictError: …`)."""

    def one_line(self) -> str:
        """The class name, message and hint on one line."""
        return f"{type(self).__name__}: {super().one_line()}"


class TransportError(NamedError, GitError):
    """Every URL of a repository failed; the message shows each cause, redacted."""

    def shown(self) -> str:
        """The action, then one line per URL with its cause (as git printed it), then the hint."""
        hint = f"\n  ({self.hint})" if self.hint else ""
        return f"{type(self).__name__}: {self.message}{hint}"


class PlanError(NamedError, UsageError):
    """A release or pin cannot be planned: nothing was changed (exit 2)."""


class DependencyCycleError(PlanError):
    """`depends_on` does not form a DAG."""


class TagConflictError(PlanError):
    """A release tag exists at another commit than the release expects."""


class SourceCommitError(PlanError):
    """The manifest's commit is reachable from none of the component's refs."""


class PinError(PlanError):
    """Base of the pinning errors."""


class PinNotFoundError(PinError):
    """A pin matched no reference."""


class PinCountError(PinError):
    """A pin matched more distinct spans than `max_matches`."""


class PinParseError(PinError):
    """A file to pin is malformed (Dockerfile, YAML, not UTF-8)."""


class PinPathError(PinError):
    """A pin path escapes its repository or crosses a symlink or submodule."""


class PinAmbiguousError(PinError):
    """One span is used by references that would need different new values."""


class PinConflictError(PinError):
    """Two pins edit overlapping spans differently."""


class PinUnresolvableError(PinError):
    """A reference's tag or digest is built from pieces that no single edit can change."""


class InfrastructureFault(LockstepError):
    """A fault of the machine, the network or a service, not of the change or its
    configuration: retried later, never blamed on the change or its owners."""


class RegistryError(NamedError):
    """The registry answered in a way waiting cannot fix."""


class RegistryUnreachableError(RegistryError, InfrastructureFault):
    """The registry could not be reached, or failed on its side (5xx): a later try may work."""


class RegistryAuthError(RegistryError):
    """The registry refused the credentials, or needs some and none are configured."""


class RegistryProtocolError(RegistryError):
    """The registry's answer can never turn into the artifact (a router 404, wrong Accept)."""


class ArtifactTimeoutError(RegistryError):
    """The artifact did not appear within `wait_timeout`; a rerun keeps waiting."""


class ArtifactAmbiguousError(RegistryError):
    """An OCI layout holds two manifests under one tag."""


class DigestMismatchError(RegistryError):
    """The registry's digest differs from the one the manifest records."""


class ReleaseBusyError(NamedError, StateError):
    """Another `release cut` holds this release's lock."""
