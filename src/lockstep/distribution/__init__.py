"""Consolidated distribution: build, record and publish each integration release's artifacts."""
