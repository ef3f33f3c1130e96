"""A minimal grpc-web client (binary mode, as browsers' grpc-web libraries send it), over httpx.

The grpc-web wire format: each message is framed as a flag byte (0x00 data, 0x80 trailers), a 4-byte
big-endian length and the payload; the trailers frame carries "grpc-status" and "grpc-message" as HTTP/1
header lines. A call that fails before any message may put them in the response headers instead.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import unquote

import httpx
from google.protobuf.message import Message

ResponseT = TypeVar("ResponseT", bound=Message)

CONTENT_TYPE = "application/grpc-web+proto"


@dataclass
class GrpcWebError(Exception):
    status: int
    message: str


def frame(message: Message) -> bytes:
    payload = message.SerializeToString()
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def parse_trailers(block: bytes) -> dict[str, str]:
    trailers = {}
    for line in block.decode().split("\r\n"):
        if ":" in line:
            key, value = line.split(":", 1)
            trailers[key.strip().lower()] = value.strip()
    return trailers


def _check_status(fields: dict[str, str] | httpx.Headers) -> None:
    status = fields.get("grpc-status")
    if status is not None and status != "0":
        raise GrpcWebError(int(status), unquote(fields.get("grpc-message", "")))


async def stream(
    client: httpx.AsyncClient, url: str, request: Message, response_type: type[ResponseT], origin: str | None = None
) -> AsyncIterator[ResponseT]:
    """Call a server-streaming (or unary) method; yield each response message as soon as its frame arrives."""
    headers = {"content-type": CONTENT_TYPE, "accept": CONTENT_TYPE, "x-grpc-web": "1"}
    if origin:
        headers["origin"] = origin
    async with client.stream("POST", url, content=frame(request), headers=headers) as response:
        response.raise_for_status()
        _check_status(response.headers)
        buffer = b""
        async for chunk in response.aiter_bytes():
            buffer += chunk
            while len(buffer) >= 5:
                flag, length = buffer[0], int.from_bytes(buffer[1:5], "big")
                if len(buffer) < 5 + length:
                    break
                payload, buffer = buffer[5 : 5 + length], buffer[5 + length :]
                if flag & 0x80:
                    _check_status(parse_trailers(payload))
                    return
                yield response_type.FromString(payload)


async def unary(client: httpx.AsyncClient, url: str, request: Message, response_type: type[ResponseT]) -> ResponseT:
    messages = [message async for message in stream(client, url, request, response_type)]
    assert len(messages) == 1, f"a unary call answered {len(messages)} messages"
    return messages[0]
