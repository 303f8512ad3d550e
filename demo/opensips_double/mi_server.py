"""The MI server: MI over datagram (mi_datagram) and over HTTP (mi_http), both answering compact JSON-RPC
(`{"jsonrpc":"2.0","result":...,"id":N}`) like captures 01-13.

Every request is recorded (`MIRequest`) before it runs. A request whose parameters match none of the command's
recipes is refused before the command runs; a crash of a command is answered "Internal error" and recorded in the
double's `internal_errors`, so the double keeps serving but the test fails when it closes. A reply too large for
one datagram is dropped, as it would be on the real server.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from demo.opensips_double.http import HTTP_HEAD_LIMIT, HttpError, mi_http_accepts, read_http_request
from demo.opensips_double.mi_params import RECIPES, MIFault
from demo.opensips_double.wire import Datagrams, compact_json

if TYPE_CHECKING:
    from demo.opensips_double.double import OpenSIPSDouble

log = logging.getLogger(__name__)

_MAX_DATAGRAM = 65507


@dataclass(frozen=True, slots=True)
class MIRequest:
    """One MI request as the double received it (`method` is None when the payload was not a JSON-RPC call)."""

    transport: Literal["datagram", "http"]
    method: str | None
    params: Any
    id: Any
    raw: bytes


class MIServer:
    """The MI transports of one double and the JSON-RPC dispatch to its commands."""

    def __init__(self, double: OpenSIPSDouble, commands: Mapping[str, Callable[[Mapping[str, Any]], Any]]) -> None:
        self._double = double
        self._commands = commands
        self._transport: asyncio.DatagramTransport | None = None
        self.datagram_address: tuple[str, int] = (double.host, 0)
        self.http_port = 0
        self._http_server: asyncio.Server | None = None
        self._http_starting: asyncio.Task[None] | None = None
        self._http_writers: set[asyncio.StreamWriter] = set()
        self._http_tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle --------------------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: Datagrams(self._on_datagram, "MI datagram"), local_addr=(self._double.host, 0)
        )
        self._transport = transport
        self.datagram_address = transport.get_extra_info("sockname")[:2]
        sock = self._listen_socket(0)
        self.http_port = sock.getsockname()[1]
        await self._serve_http(sock)

    def listen_http_again(self) -> None:
        # Listening again at once (synchronously) so a client that connects right after this call is served.
        sock = self._listen_socket(self.http_port)
        self._http_starting = self._double._loop.create_task(self._serve_http(sock))

    def drop_connections(self) -> None:
        for writer in list(self._http_writers):
            writer.transport.abort()  # a new process has none of the old TCP connections

    def cancel_connections(self) -> list[asyncio.Task[Any]]:
        """Cancel the mi_http connection handlers; the caller awaits them."""
        tasks = list(self._http_tasks)
        for task in tasks:
            task.cancel()
        return tasks

    def close_datagram(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # -- transports ----------------------------------------------------------------------------------------------

    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._double.down or self._transport is None:
            return  # a dead process reads nothing
        response = self.handle(data, "datagram")
        if response is None:
            return
        if len(response) > _MAX_DATAGRAM:
            log.warning("MI reply of %d bytes does not fit a datagram; dropped (use mi_http)", len(response))
            return
        self._transport.sendto(response, addr)

    def _listen_socket(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._double.host, port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    async def _serve_http(self, sock: socket.socket) -> None:
        try:
            self._http_server = await asyncio.start_server(self._http_connection, sock=sock, limit=HTTP_HEAD_LIMIT)
        except BaseException:
            sock.close()
            raise

    def stop_http(self) -> None:
        if self._http_starting is not None and not self._http_starting.done():
            self._http_starting.cancel()
        self._http_starting = None
        if self._http_server is not None:
            self._http_server.close()
            self._http_server = None
        for writer in list(self._http_writers):
            writer.transport.abort()

    async def _http_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._http_tasks.add(task)
        self._http_writers.add(writer)
        try:
            while not self._double.down:
                request = await read_http_request(reader, writer)
                if request is None:
                    break
                method, target, headers, body = request
                if not mi_http_accepts(method, target, headers, body):
                    # mi_http logs "empty request" and never answers (capture 10): the client times out.
                    while await reader.read(65536):
                        pass
                    break
                response = self.handle(body, "http")
                if response is None:
                    continue  # a JSON-RPC notification: nothing to send back
                head = (
                    "HTTP/1.1 200 OK\r\n"
                    f"Date: {email.utils.formatdate(usegmt=True)}\r\n"
                    "Content-Type: application/json\r\n"
                    f"Content-Length: {len(response)}\r\n\r\n"
                )
                writer.write(head.encode("ascii") + response)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, HttpError) as exc:
            log.debug("mi_http connection dropped: %s", exc)
        except Exception as exc:  # a bug in the double: drop the connection, but make it visible
            log.exception("the OpenSIPS double's mi_http connection failed")
            self._double.internal_errors.append(f"mi_http: {exc!r}")
        finally:
            self._http_writers.discard(writer)
            if task is not None:
                self._http_tasks.discard(task)
            writer.close()

    # -- JSON-RPC -----------------------------------------------------------------------------------------------

    def handle(self, payload: bytes, transport: Literal["datagram", "http"]) -> bytes | None:
        """One JSON-RPC request in, the response bytes out (None: a notification, which gets no reply)."""
        try:
            request = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            self._double.requests.append(MIRequest(transport, None, None, None, payload))
            return compact_json({"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": None})
        if not isinstance(request, dict):
            self._double.requests.append(MIRequest(transport, None, None, None, payload))
            return compact_json({"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": None})
        request_id = request.get("id")
        method = request.get("method")
        params = request.get("params")
        self._double.requests.append(
            MIRequest(transport, method if isinstance(method, str) else None, params, request_id, payload)
        )
        response: dict[str, Any] = {"jsonrpc": "2.0"}
        try:
            if request.get("jsonrpc") != "2.0" or not isinstance(method, str):
                raise MIFault(-32600, "Invalid Request")
            response["result"] = self._run_command(method, params)
        except MIFault as fault:
            error: dict[str, Any] = {"code": fault.code, "message": fault.message}
            if fault.data is not None:
                error["data"] = fault.data
            response["error"] = error
        except Exception as exc:  # a bug in the double: keep serving, but make it visible
            log.exception("the OpenSIPS double failed on %r", method)
            self._double.internal_errors.append(f"{method}: {exc!r}")
            response["error"] = {"code": -32603, "message": "Internal error"}
        response["id"] = request_id
        if "id" not in request:
            return None
        return compact_json(response)

    def _run_command(self, method: str, params: Any) -> Any:
        handler = self._commands.get(method)
        if handler is None:
            raise MIFault(-32601, "Method not found")
        recipes = RECIPES[method]
        if params is None:
            params = {}
        if isinstance(params, list):
            # Positional parameters (opensips-cli sends them) fill the recipe with as many parameters.
            for recipe in recipes:
                if len(recipe) == len(params):
                    return handler(dict(zip(recipe, params, strict=True)))
        elif isinstance(params, dict) and any(set(recipe) == set(params) for recipe in recipes):
            return handler(params)
        raise MIFault(-32602, "Invalid params", "Too few or too many parameters")
