"""`/api/events`: server-sent events telling open pages that what they show changed, so they
fetch `/api/overview` at once instead of polling it."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from lockstep.server.auth import require_read_stream
from lockstep.server.live import ChangeFeed
from lockstep.server.queue_routes import ERRORS

HEARTBEAT = 15.0  # seconds between keep-alive comments (proxies drop silent connections)
STREAM_SECONDS = 300.0  # a stream then ends; EventSource reconnects by itself
RETRY_MS = 2000  # how long EventSource waits before reconnecting

router = APIRouter(tags=["page"], responses=ERRORS)


def feed_of(request: Request) -> ChangeFeed:
    """The server's change feed (set by the app factory)."""
    feed: ChangeFeed = request.app.state.feed
    return feed


@router.get("/api/events", dependencies=[Depends(require_read_stream)],
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`changed` events: `{\"version\": N}`"}})
async def events(request: Request) -> StreamingResponse:
    """A `text/event-stream` of `changed` events, one at once and one whenever the queue,
    releases, cuts or environments change, each carrying a growing `version`. When reads
    need the token, it may be given as `?token=` (EventSource cannot send headers)."""
    feed = feed_of(request)
    return StreamingResponse(_stream(feed), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _stream(feed: ChangeFeed) -> AsyncIterator[bytes]:
    """The events of one open page until the server stops or STREAM_SECONDS pass (Starlette
    cancels it when the page goes away)."""
    async with feed.subscription():
        yield f"retry: {RETRY_MS}\n\n".encode()
        seen = -1
        ends = time.monotonic() + STREAM_SECONDS
        while not feed.closed and time.monotonic() < ends:
            version = await feed.wait(seen, min(HEARTBEAT, max(0.0, ends - time.monotonic())))
            if version != seen:
                seen = version
                data = json.dumps({"version": version})
                yield f"event: changed\nid: {version}\ndata: {data}\n\n".encode()
            else:
                yield b": keep-alive\n\n"
