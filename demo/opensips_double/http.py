"""The HTTP/1.x framing mi_http reads: one request at a time on a kept-alive connection, chunked or not.

mi_http answers only a POST to /mi carrying `Content-Type: application/json`; anything else gets no response at
all, as on the real server (capture 10), including non-POST methods and other paths, whose handling the captures
do not show.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

HTTP_HEAD_LIMIT = 16 * 1024
_HTTP_BODY_LIMIT = 1024 * 1024


class HttpError(Exception):
    """A request mi_http cannot read; the connection is dropped."""


def mi_http_accepts(method: str, target: str, headers: Mapping[str, str], body: bytes) -> bool:
    """Whether mi_http answers: a POST to /mi with a JSON body. Nothing else gets a response (capture 10)."""
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    path = target.split("?", 1)[0]
    return method == "POST" and path == "/mi" and media_type == "application/json" and bool(body)


async def read_http_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[str, str, dict[str, str], bytes] | None:
    """One HTTP/1.x request (None at a clean end of stream); HttpError when it cannot be read."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise HttpError("truncated request head") from exc
    except asyncio.LimitOverrunError as exc:
        raise HttpError("request head too large") from exc
    start, *lines = head[:-4].decode("latin-1").split("\r\n")
    parts = start.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(f"bad request line {start[:80]!r}")
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise HttpError(f"bad header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    else:
        length = headers.get("content-length", "0")
        if not length.isdigit() or int(length) > _HTTP_BODY_LIMIT:
            raise HttpError(f"bad Content-Length {length[:20]!r}")
        body = await reader.readexactly(int(length))
    return parts[0], parts[1], headers, body


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = (await reader.readuntil(b"\r\n"))[:-2].split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError as exc:
            raise HttpError("bad chunk size") from exc
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            return bytes(body)
        if len(body) + size > _HTTP_BODY_LIMIT:
            raise HttpError("body too large")
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise HttpError("bad chunk end")
