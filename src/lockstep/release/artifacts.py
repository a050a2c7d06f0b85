"""Registry access for a release: one artifact source per registry key (an OCI layout directory
or the distribution API), the notification endpoint, and the waits' progress."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from lockstep import faults
from lockstep.config import Config
from lockstep.errors import ConfigError
from lockstep.registry.distribution import DistributionSource
from lockstep.registry.distribution import RegistrySettings as ClientSettings
from lockstep.registry.layout import LayoutSource, digest_mismatch_hint
from lockstep.registry.notifications import NotificationServer
from lockstep.registry.source import Answer, ArtifactSource
from lockstep.registry.wait import Found, Poll, Progress, wait_for_artifact
from lockstep.release.plan import Artifact

ProgressFn = Callable[[str, Progress], None]


class Artifacts:
    """The registries of one run: sources made once per registry key, shared by every wait."""

    def __init__(self, cfg: Config, root: Path, *, progress: ProgressFn | None = None,
                 environ: dict[str, str] | None = None) -> None:
        self.cfg = cfg
        self.root = root
        self.env = dict(os.environ if environ is None else environ)
        self.progress = progress
        self._sources: dict[str, ArtifactSource] = {}
        self._lock = threading.Lock()
        self.notifications: NotificationServer | None = None

    def settings_key(self, registry: str) -> str | None:
        """The `[registries]` key configuring a registry (host[:port], case-insensitive)."""
        for key in self.cfg.registries:
            if key.lower() == registry.lower():
                return key
        return None

    def source(self, registry: str) -> ArtifactSource:
        """The artifact source for a registry key, made on first use."""
        with self._lock:
            found = self._sources.get(registry)
            if found is None:
                found = self._make(registry)
                self._sources[registry] = found
            return found

    def _make(self, registry: str) -> ArtifactSource:
        key = self.settings_key(registry)
        reg = self.cfg.registries.get(key) if key else None
        if reg is not None and reg.layout is not None:
            return LayoutSource(self.root / reg.layout, registry)
        username = password = None
        if reg is not None and reg.username_env and reg.password_env:
            missing = [v for v in (reg.username_env, reg.password_env) if v not in self.env]
            if missing:
                raise ConfigError(f'[registries."{key}"] names {missing[0]}, which is not set',
                                  f"export {missing[0]} before running lockstep")
            username, password = self.env[reg.username_env], self.env[reg.password_env]
        ca = str(self.root / reg.ca_file) if reg is not None and reg.ca_file else None
        return DistributionSource(ClientSettings(
            host=registry, insecure=bool(reg and reg.insecure), ca_file=ca,
            username=username, password=password,
            scheme=reg.scheme if reg is not None else None))

    def start_notifications(self) -> None:
        """Serve the registry webhook when `[release] notifications` is set."""
        conf = self.cfg.release.notifications
        if conf is None or self.notifications is not None:
            return
        token = None
        if conf.token_env:
            token = self.env.get(conf.token_env)
            if not token:
                raise ConfigError(f"[release] notifications.token_env names {conf.token_env}, "
                                  "which is not set", f"export {conf.token_env}")
        host, port = conf.address
        self.notifications = NotificationServer(host, port, conf.path, token).start()

    def close(self) -> None:
        """Stop the webhook and close HTTP clients."""
        if self.notifications is not None:
            self.notifications.close()
        for src in self._sources.values():
            close = getattr(src, "close", None)
            if close is not None:
                close()

    def check_once(self, art: Artifact) -> Answer:
        """One check, as `--dry-run` shows the artifact's state."""
        return self.source(art.registry).check(art.repository, art.image_tag,
                                               first_or_last=True)

    def wait(self, component: str, art: Artifact, cancel: threading.Event,
             tag_pushed: tuple[str, float] | None = None) -> Found:
        """Wait for one artifact (notifications wake it; polling always runs). `tag_pushed`
        (tag, epoch seconds) lets a timeout say how long ago the tag reached the remote."""
        release = self.cfg.release
        started = time.monotonic()

        def note() -> str:
            text = f"waited {time.monotonic() - started:.0f}s in this run"
            if tag_pushed is not None:
                ago = max(0.0, time.time() - tag_pushed[1])
                text += f"; tag {tag_pushed[0]} pushed {ago / 60:.0f}m{ago % 60:02.0f}s ago"
            return text

        misses = [0]

        def on_progress(p: Progress) -> None:
            if p.kind == "check" and p.next_check_in is not None:
                misses[0] += 1
                if misses[0] == 1:
                    faults.crashpoint("release-during-wait")
            if self.progress is not None:
                self.progress(component, p)

        return wait_for_artifact(
            self.source(art.registry), art.repository, art.image_tag,
            timeout=release.wait_timeout, image=f"{art.image}", poll=Poll(
                release.poll.initial, release.poll.max),
            notifications=self.notifications, registry=art.registry, cancel=cancel,
            progress=on_progress,
            note=note)

    @staticmethod
    def mismatch_hint(found: Found) -> str | None:
        """`copied without --all?` for a single-platform layout manifest."""
        return digest_mismatch_hint(found.answer)
