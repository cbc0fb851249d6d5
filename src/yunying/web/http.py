"""HTTP plumbing shared by every endpoint: JSON answers, bounded body reading, gzip, auth header."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from yunying.ingest.model import ValidatedBatch, validate_batch
from yunying.ingest.writer import WriteResult, WriterStopped

if TYPE_CHECKING:
    from yunying.runtime import Runtime

log = logging.getLogger("yunying.ingest")


class HTTPProblem(Exception):
    """An error answered as JSON ``{"error": message, ...}`` with the given status."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": message, **extra}


@asynccontextmanager
async def in_background(work: Coroutine[Any, Any, None] | None) -> AsyncIterator[None]:
    """Run ``work`` (a loop of a scheduler) while the app serves, cancelled at shutdown;
    ``None`` runs nothing (the scheduler is turned off)."""
    task = asyncio.create_task(work) if work is not None else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, gunzipped if needed; 413 past ``limit`` bytes either way."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPProblem(413, f"request body is larger than the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPProblem(413, f"request body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "").lower()
    if encoding == "gzip" or body[:2] == b"\x1f\x8b":
        body = gunzip(body, limit)
    elif encoding not in ("", "identity"):
        raise HTTPProblem(415, f"content-encoding {encoding!r} is not supported: use gzip")
    return body


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress gzip data, refusing output past ``limit`` (gzip bombs) or broken input."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, limit + 1)
        if len(out) > limit or d.unconsumed_tail:
            raise HTTPProblem(413, f"decompressed body is larger than the limit of {limit} bytes")
        if not d.eof:
            raise HTTPProblem(400, "gzip body is truncated")
    except zlib.error as exc:
        raise HTTPProblem(400, f"body is not valid gzip: {exc}") from None
    return out


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def store_events(
    runtime: Runtime, project_id: int, raws: list[Any], client_ip: str | None, *, sdk: bool = False
) -> tuple[ValidatedBatch, WriteResult]:
    """Validate native-shaped events and wait until the good ones are committed.

    Every ingestion endpoint (native and SDK-compatible) ends here; a failure to commit is a
    503 so that clients retry, and nothing of the request was stored.
    """
    batch = validate_batch(raws, client_ip=client_ip, sdk=sdk)
    try:
        result = await asyncio.wrap_future(runtime.writer.submit(project_id, batch.events))
    except WriterStopped as exc:
        raise HTTPProblem(503, str(exc)) from None
    except Exception:
        log.exception("ingestion write failed")
        raise HTTPProblem(503, "events could not be stored; nothing was saved, retry") from None
    return batch, result


def client_ip(request: Request) -> str | None:
    """The peer address (put a trusted proxy's X-Forwarded-For handling here when needed)."""
    return request.client.host if request.client else None
