"""The one git transport layer: every ls-remote, fetch and push of lockstep runs through it.

`Remote` tries a repository's URLs with the HTTPS→SSH fallback of spec/release.md §4.2;
`run_single` runs one command against one remote (the integration remote) the same safe way.
"""

from lockstep.transport.remote import (
    Attempt,
    PushedRef,
    PushRejectedError,
    Remote,
    RemoteRef,
    run_single,
)
from lockstep.transport.settings import (
    LOOKUP_TIMEOUT,
    TRANSFER_TIMEOUT,
    HostAuth,
    Settings,
    from_config,
)

__all__ = ["LOOKUP_TIMEOUT", "TRANSFER_TIMEOUT", "Attempt", "HostAuth", "PushRejectedError",
           "PushedRef", "Remote", "RemoteRef", "Settings", "from_config", "run_single"]
