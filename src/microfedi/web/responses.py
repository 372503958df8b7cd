"""Response helpers shared by the HTML and ActivityPub views."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from microfedi.domains import Directory, HostView

ACTIVITY_JSON = "application/activity+json"
_AS_ACCEPT = ("application/activity+json", "application/ld+json")


def dump_json(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def wants_activity_json(request: Request) -> bool:
    """True when Accept asks for ActivityStreams (either media type, any parameters)."""
    accept = request.headers.get("accept", "")
    return any(kind in accept for kind in _AS_ACCEPT)


def activity_response(body: bytes, status: int = 200) -> Response:
    return Response(body, status, media_type=ACTIVITY_JSON, headers={"Vary": "Accept"})


def json_response(body: bytes, media_type: str = "application/json", status: int = 200, cors: bool = False) -> Response:
    headers = {"Access-Control-Allow-Origin": "*"} if cors else None
    return Response(body, status, media_type=media_type, headers=headers)


def error(status: int, reason: str) -> Response:
    return PlainTextResponse(reason + "\n", status)


def host_view(request: Request) -> HostView:
    """The local host this request was routed to (set by the routing middleware)."""
    return request.scope["microfedi.host"]


def directory(request: Request) -> Directory:
    return request.scope["microfedi.directory"]
