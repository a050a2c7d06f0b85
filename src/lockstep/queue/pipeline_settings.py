"""lockstep.toml's `[queue]` and `[[stages]]` as the pipeline scheduler's settings."""

from __future__ import annotations

from lockstep.config import Config
from lockstep.queue.pipeline import Mode, PipelineSettings, StageSpec, WindowKind


def pipeline_settings(config: Config) -> PipelineSettings:
    """The scheduler's view of the configuration: mode, window, batching, stages and pools."""
    q = config.queue
    stages = tuple(
        StageSpec(stage.name, stage.pool,
                  None if stage.configurations is None else frozenset(stage.configurations),
                  stage.retries)
        for stage in config.stages)
    return PipelineSettings(
        mode=Mode(q.mode), stages=stages, pools=dict(q.pools), window=WindowKind(q.window),
        window_fixed=q.window_fixed, window_start=q.window_start, window_floor=q.window_floor,
        window_max=q.window_max, batch_size=q.batch_size, batch_max_wait=q.batch_max_wait,
        bisect_ways=None if q.bisect_ways == "auto" else q.bisect_ways,
        retry_backoff_s=q.retry_backoff, flake_retries=q.flake_retries,
        item_timeout=q.item_timeout, infra_pause_after=q.infra_pause_after)
