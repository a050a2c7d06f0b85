"""Pinning: find image references in Dockerfiles, Helm values, Chart.yaml and text files, and
splice new tags and digests into their exact bytes (spec §6). Entry points: `plan` (compute and
apply edits on bytes), `safe_write` (the on-disk write of `lockstep pin`)."""
