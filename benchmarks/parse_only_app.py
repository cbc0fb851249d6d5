"""The ingestion ceiling: the same HTTP stack as ``yunying serve``, doing nothing but parsing.

``POST /v1/events`` reads the body, ``orjson.loads`` it and answers the number of events, as
JSON, through the same FastAPI/Starlette, uvicorn (httptools + uvloop when installed) and process
model (one process, one event loop) that ``yunying serve`` uses. No auth, validation, writer or
storage: whatever the real endpoint does on top of this is the cost of ingestion.

The SDK protocols' paths do the least decoding their wire format needs before there are events
to look at, and nothing more: PostHog ``/batch/`` and Amplitude ``/2/httpapi`` parse JSON;
Segment ``/v1/batch`` decodes its Basic header and parses JSON; Mixpanel ``/track`` parses the
form and the JSON in ``data``; Sensors ``/sa`` parses the form, base64-decodes and gunzips
``data_list`` and parses the JSON.

Run: ``python benchmarks/parse_only_app.py --port 8100``
"""

from __future__ import annotations

import argparse
import base64
import gzip
from urllib.parse import parse_qs

import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

app = FastAPI(title="parse-only ceiling")


@app.get("/health")
async def health() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@app.post("/v1/events")
async def events(request: Request) -> Response:
    payload = orjson.loads(await request.body())
    batch = payload["batch"] if isinstance(payload, dict) and "batch" in payload else [payload]
    body = orjson.dumps({"accepted": len(batch), "duplicates": 0, "rejected": 0})
    return Response(body, media_type="application/json")


def _answer(n: int) -> Response:
    return Response(orjson.dumps({"accepted": n}), media_type="application/json")


@app.post("/batch/")
async def posthog_batch(request: Request) -> Response:
    return _answer(len(orjson.loads(await request.body())["batch"]))


@app.post("/v1/batch")
async def segment_batch(request: Request) -> Response:
    user = base64.b64decode(request.headers["authorization"].split(" ", 1)[1]).split(b":")[0]
    assert user
    return _answer(len(orjson.loads(await request.body())["batch"]))


@app.post("/track")
async def mixpanel_track(request: Request) -> Response:
    form = parse_qs((await request.body()).decode())
    return _answer(len(orjson.loads(form["data"][0])))


@app.post("/2/httpapi")
async def amplitude_httpapi(request: Request) -> Response:
    return _answer(len(orjson.loads(await request.body())["events"]))


@app.post("/sa")
async def sensors_sa(request: Request) -> Response:
    form = parse_qs((await request.body()).decode())
    records = orjson.loads(gzip.decompress(base64.b64decode(form["data_list"][0])))
    return _answer(len(records))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    # the same uvicorn configuration as yunying.cli.main.run_server
    config = uvicorn.Config(app, host=args.host, port=args.port, log_config=None, access_log=False)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
