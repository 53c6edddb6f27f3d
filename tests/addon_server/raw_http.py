"""Raw HTTP/1.1 over a real socket: for requests no HTTP client library would send."""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass
from typing import Any

from tests.addon_server.conftest import HANG_TIMEOUT_S

HOST = "127.0.0.1"
ANSWER_WITHIN_S = HANG_TIMEOUT_S
"""A bound for a hung server, never a speed expectation."""


@dataclass(frozen=True, slots=True)
class RawResponse:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()


async def read_response(reader: asyncio.StreamReader) -> RawResponse:
    """One response: the status line, the headers, and a Content-Length body."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return RawResponse(int(status_line.split()[1]), headers, body)


async def connect_sending(
    port: int, data: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A fresh connection to ``port`` whose first bytes of ``data`` are on the wire before the
    server (on this event loop) has even accepted it.

    The server's keep-alive timer starts when it accepts. Bytes written after that, from this
    loop, can lose to a short keep-alive when the machine stalls in between (the connection is
    reset before the request is read); bytes already in the socket are read before the timer
    can fire, however busy the machine.
    """
    sock = socket.create_connection((HOST, port))  # the kernel completes it, not the server
    sock.setblocking(False)
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(data[sent:])
    await writer.drain()
    return reader, writer


async def exchange(port: int, data: bytes) -> RawResponse:
    """Send ``data`` on a fresh connection and read the response to it."""
    reader, writer = await connect_sending(port, data)
    try:
        return await asyncio.wait_for(read_response(reader), ANSWER_WITHIN_S)
    finally:
        writer.close()


def get(path: str, *headers: str) -> bytes:
    """A GET request with extra header lines, as bytes on the wire."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {HOST}", *headers, "", ""]
    return "\r\n".join(lines).encode()
