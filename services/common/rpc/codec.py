"""The wire codec of a call: binary protobuf, or the proto3 JSON mapping for browser clients that speak JSON
(grpc-web `+json`, Connect `application/json` and `application/connect+json`).

grpcio decodes and encodes messages with the method's protobuf functions, and does not tell a handler the
call's content type. So the gateway marks a JSON call with `x-agentplatform-codec: json`, the server
interceptor decodes the request body once it has the call's metadata (`decode`), and the responses are encoded
with the codec of the call being handled (`encoder`). Any other caller gets binary protobuf, as before.
"""

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from services.common import errors

#: Metadata key the gateway sets on a JSON call; its only value is "json".
CODEC_KEY = "x-agentplatform-codec"
JSON = "json"

#: Whether the call being handled speaks JSON. grpc.aio handles a call, decoding, handler and encoding, in one
#: task, so a value set while decoding is the one its responses are encoded with.
_speaks_json: ContextVar[bool] = ContextVar("speaks_json", default=False)


class Encoded:
    """A request body still to be decoded, and the message class it is to become."""

    __slots__ = ("data", "message_class")

    def __init__(self, data: bytes, message_class: type[Message]) -> None:
        self.data = data
        self.message_class = message_class


def deferred(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """A request deserializer that leaves decoding to `decode` (the generated one is the class's FromString);
    any other is kept as it is. (A deserializer may not fail either: grpc would answer with the exception's
    name.)"""
    message_class = getattr(deserialize, "__self__", None)
    if deserialize is None or not isinstance(message_class, type) or not issubclass(message_class, Message):
        return deserialize
    return lambda data: Encoded(data, message_class)


def decode(request: Any, metadata: Mapping[str, Any]) -> Any:
    """The request message of a call with this metadata; InvalidArgument naming the message when the body is
    not one."""
    if not isinstance(request, Encoded):
        return request
    speaks_json = metadata.get(CODEC_KEY) == JSON
    _speaks_json.set(speaks_json)
    name = request.message_class.DESCRIPTOR.full_name
    try:
        if speaks_json:
            return json_format.Parse(request.data, request.message_class())
        return request.message_class.FromString(request.data)
    except json_format.ParseError as exc:
        raise errors.InvalidArgument(f"the request body is not a valid {name} message (JSON): {exc}") from None
    except (DecodeError, ValueError, UnicodeDecodeError):
        raise errors.InvalidArgument(f"the request body is not a valid {name} message (protobuf)") from None


def encoder(serialize: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    """A response serializer that writes JSON for a call that speaks it, and `serialize`'s protobuf otherwise."""
    if serialize is None:
        return None

    def encode(message: Any) -> bytes:
        if _speaks_json.get() and isinstance(message, Message):
            return to_json(message).encode()
        return serialize(message)

    return encode


def to_json(message: Message) -> str:
    """A response in the proto3 JSON mapping, as a person reads it: fields without presence are written even at
    their default (`"enabled": false`, `"stepCount": "0"`, `"state": "RUN_STATE_UNSPECIFIED"`, `[]`), where the
    mapping's default leaves them out and a disabled tool looked like one with no `enabled` at all. Unset message
    fields, oneofs and `optional` fields stay out: their absence means something."""
    return json_format.MessageToJson(message, indent=None, always_print_fields_with_no_presence=True)
