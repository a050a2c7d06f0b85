"""Waiting for an artifact in an OCI registry: the distribution API client, its auth, the
OCI layout reader, the notification webhook and the wait loop (spec/release.md §5)."""
