"""The ceiling for discovery GETs: a bare Starlette JSON app under microfedi's uvicorn settings.

It answers the same two paths as the throughput benchmark's hot path (WebFinger
and `/@username`) with a small constant JSON document, so the same wrk script
drives both servers and the difference is what microfedi does per request.

    python bench/bare_starlette.py --port 8001
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route


async def webfinger(request: Request) -> Response:
    return JSONResponse({"subject": "acct:bare@bare.example", "links": []}, media_type="application/jrd+json")


async def actor(request: Request) -> Response:
    return JSONResponse({"id": "https://bare.example/@bare", "type": "Person"}, media_type="application/activity+json")


async def health(request: Request) -> Response:
    return PlainTextResponse("OK")


app = Starlette(routes=[Route("/.well-known/webfinger", webfinger), Route("/@{username}", actor), Route("/health", health)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # The options of `microfedi run` (cli.py `_serve`) that touch each request:
    # loop and http left on "auto" (uvloop + httptools when installed), one
    # process, no access log, X-Forwarded-* honoured, no Server header.
    uvicorn.run(app, host="127.0.0.1", port=args.port, access_log=False, proxy_headers=True, server_header=False, log_config=None)


if __name__ == "__main__":
    main()
