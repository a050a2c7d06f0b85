"""`lockstep crd`: print the Environment CustomResourceDefinition as YAML (spec §4.6)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from lockstep.errors import UsageError

_DNS_LABEL_HINT = "lower-case letters, digits and '-', at most 63 characters"


def _ca_bundle(path: Path) -> bytes:
    """The PEM certificates in `path`, checked to parse (the API server would reject them later)."""
    import ssl

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"--ca-bundle {path}: cannot read: {exc.strerror or exc}",
                         "pass the PEM file of the CA that signed the webhook's certificate") \
            from None
    try:
        text = data.decode("ascii")
        if "-----BEGIN CERTIFICATE-----" not in text:
            raise ValueError("no PEM certificate")
        ssl.create_default_context().load_verify_locations(cadata=text)
    except (UnicodeDecodeError, ValueError, ssl.SSLError) as exc:
        raise UsageError(f"--ca-bundle {path}: not a PEM certificate bundle ({exc})",
                         "pass a file holding -----BEGIN CERTIFICATE----- blocks") from None
    return data


def _dns_label(value: str, option: str) -> str:
    import re

    if len(value) > 63 or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", value):
        raise UsageError(f"{option} {value!r} is not a DNS label", _DNS_LABEL_HINT)
    return value


def crd(
    ca_bundle: Annotated[Path | None, typer.Option(
        "--ca-bundle", help="PEM CA certificate(s) that signed the webhook's certificate.")
    ] = None,
    service_name: Annotated[str, typer.Option(
        "--service-name", help="Service in front of `lockstep webhook serve`.")
    ] = "lockstep-webhook",
    namespace: Annotated[str, typer.Option(
        "--namespace", help="Namespace of that Service.")] = "lockstep-system",
) -> None:
    """Print the Environment CustomResourceDefinition (both versions, webhook conversion)."""
    from lockstep.rollout import crd as definition
    from lockstep.rollout.resource import dump

    bundle = _ca_bundle(ca_bundle) if ca_bundle is not None else None
    manifest = definition.crd(bundle, _dns_label(service_name, "--service-name"),
                              _dns_label(namespace, "--namespace"))
    sys.stdout.write(dump(manifest, "yaml"))
