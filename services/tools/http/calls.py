"""An HTTP tool, and how one call is made.

The executor has validated the arguments against the tool's schema before `call`. The call then:

1. checks the URL's host against TOOLS_HTTP_ALLOWED_HOSTS again, resolves it and checks every address
   (services.tools.http.destinations);
2. sends the request to the first checked address itself: the URL's host is replaced by that address, the Host
   header keeps naming the host, and for https the TLS server name (SNI) and the certificate check use the host
   too (httpx's `sni_hostname` extension). So the address checked is the address connected to: a name that
   resolves elsewhere between the check and the connection (DNS rebinding) gains nothing;
3. reads at most TOOLS_MAX_RESULT_BYTES plus a little of the body (it stops reading there), and answers with the
   JSON as the structured result, or the text.

A fresh client per call, without proxies from the environment (a proxy would connect to the host by name,
undoing the pinning) and without connection reuse across tools (a TLS connection proven for one host must not
carry another host's request, with that tool's secret headers, to the same address). Redirects are not followed:
a 3xx is an answer outside 2xx like any other, so a redirect cannot lead a call past the checks.

Left to the network: the response is decoded as the server sends it (Accept-Encoding: identity is asked for, so
a compressed body is only what a server forces on us; httpx decompresses chunk by chunk, and reading stops at the
bound).
"""

import copy
import json
import math
from typing import Any

import httpx

from services.common.errors import DeadlineExceeded, Internal, Unavailable
from services.common.json_values import MAX_JSON_DEPTH, JsonInputError, JsonTooDeep, parse_json
from services.tools.base import RemoteTool, ToolContext, ToolHints, ToolOutput
from services.tools.http.destinations import DestinationPolicy, url_host
from services.tools.http.specs import HttpToolSpec, Repeatability

#: How much of an error response's body the failure message quotes.
ERROR_BODY_CHARS = 500
#: Read past the result bound by this much, so that the cut's marker says the body was longer.
READ_MARGIN_BYTES = 1024
_JSON_BODY_METHODS = ("POST", "PUT", "PATCH")
#: The header a call's idempotency key is sent in.
IDEMPOTENCY_HEADER = "Idempotency-Key"


def hints_of(method: str, repeatability: Repeatability | None = None) -> ToolHints:
    """What an HTTP tool does to the world: what its creator declared (`repeatability`), else its method's
    meaning (RFC 9110): GET only reads; PUT and DELETE are idempotent; anything but GET may change or delete data.
    All of them reach outside."""
    if repeatability == "read_only":
        return ToolHints(read_only=True, destructive=False, idempotent=True, open_world=True)
    if repeatability is not None:
        return ToolHints(read_only=False, destructive=True, idempotent=repeatability == "idempotent", open_world=True)
    if method == "GET":
        return ToolHints(read_only=True, destructive=False, idempotent=True, open_world=True)
    return ToolHints(read_only=False, destructive=True, idempotent=method in ("PUT", "DELETE"), open_world=True)


class HttpTool(RemoteTool):
    """A tool created with CreateTool: its calls are HTTP requests to one endpoint (see the module's docstring)."""

    icon = "IconApi"

    def __init__(
        self, spec: HttpToolSpec, destinations: DestinationPolicy, *, timeout_seconds: float, max_result_bytes: int
    ) -> None:
        self.spec = spec
        self.name = spec.tool_id
        self.display_name = spec.display_name
        self.description = spec.description
        self.hints = hints_of(spec.method, spec.repeatability)
        self._destinations = destinations
        self._timeout_seconds = timeout_seconds
        self._max_result_bytes = max_result_bytes
        self._read_limit = max_result_bytes + READ_MARGIN_BYTES

    def get_parameters(self) -> dict[str, Any]:
        """The spec's JSON schema of the arguments (a copy)."""
        return copy.deepcopy(self.spec.parameters)

    def unavailable_reason(self, context: ToolContext | None) -> str | None:
        # The allow list may have narrowed since the tool was created (a restart with other settings).
        return self._destinations.host_problem(url_host(httpx.URL(self.spec.url)))

    async def call(self, arguments: dict[str, Any], idempotency_key: str = "") -> ToolOutput:
        spec = self.spec
        url = httpx.URL(spec.url)
        host = url_host(url)
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = await self._destinations.resolve(host, port)
        arguments = _integral_numbers(arguments)
        headers = {"Accept-Encoding": "identity", **spec.headers, "Host": url.netloc.decode("ascii")}
        if idempotency_key:
            # The header of the IETF draft (draft-ietf-httpapi-idempotency-key-header) that payment and other APIs
            # honour: one per call, the same on a repeat, so the endpoint can act once. It overrides one in the spec.
            headers = {k: v for k, v in headers.items() if k.lower() != "idempotency-key"}
            headers[IDEMPOTENCY_HEADER] = idempotency_key
        extensions = {"sni_hostname": host} if url.scheme == "https" else {}
        request_options: dict[str, Any] = (
            # httpx's params replace the URL's query: the URL's own parameters are kept by passing them along.
            {"json": arguments} if spec.method in _JSON_BODY_METHODS
            else {"params": [*url.params.multi_items(), *_query(arguments)]}
        )
        try:
            async with httpx.AsyncClient(
                timeout=self._timeout_seconds, follow_redirects=False, trust_env=False
            ) as client:
                for index, address in enumerate(addresses):
                    try:
                        async with client.stream(
                            spec.method, url.copy_with(host=str(address)), headers=headers, extensions=extensions,
                            **request_options,
                        ) as response:
                            body = await self._read_bounded(response)
                        break
                    except httpx.ConnectError:
                        # The name's next checked address, as a client trying each address of a name would
                        # ("localhost" is ::1 and 127.0.0.1, and the server may listen on one of them only).
                        if index == len(addresses) - 1:
                            raise
        except httpx.TimeoutException:
            raise DeadlineExceeded(f"tool '{self.name}': {host} did not answer within {self._timeout_seconds:g} s") \
                from None
        except httpx.HTTPError as exc:
            raise Unavailable(f"tool '{self.name}' could not reach {host}: {_describe(exc)}") from None
        text = body.decode(response.encoding or "utf-8", errors="replace")
        if not 200 <= response.status_code < 300:
            shown = text if len(text) <= ERROR_BODY_CHARS else text[: ERROR_BODY_CHARS - 1] + "…"
            raise Internal(
                f"tool '{self.name}' failed: {spec.method} {host} answered HTTP {response.status_code} "
                f"{response.reason_phrase}: {shown.strip() or '(no body)'}"
            )
        if len(body) > self._read_limit:
            return self._cut(text, response)
        if _is_json(response) and len(body) <= self._max_result_bytes:
            try:
                return ToolOutput(parse_json(text), text)
            except JsonTooDeep:
                # Nothing downstream could carry it (see services.common.json_values): the tool's failure.
                raise Internal(
                    f"tool '{self.name}' failed: the tool's response is nested deeper than {MAX_JSON_DEPTH} levels"
                ) from None
            except JsonInputError:
                pass  # a server that says JSON and sends something else (or NaN): its text is what there is
        return ToolOutput(text, text)

    def _cut(self, text: str, response: httpx.Response) -> ToolOutput:
        """The start of a body that was not read to its end, with a marker saying so (to_tool_output's own marker
        would give the size read as the size of the body)."""
        length = response.headers.get("content-length", "")
        size = f"{int(length):,} bytes" if length.isdigit() else f"more than {self._read_limit:,} bytes"
        marker = f"\n[cut: the response was {size}; the limit is {self._max_result_bytes:,}; the rest was not read]"
        room = max(0, self._max_result_bytes - len(marker.encode()))
        text = text.encode()[:room].decode(errors="ignore") + marker
        return ToolOutput(text, text)

    async def _read_bounded(self, response: httpx.Response) -> bytes:
        """The body, or its first `_read_limit` bytes and a little more: the rest is not read."""
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk[: self._read_limit + 1 - len(body)]
            if len(body) > self._read_limit:
                break
        return bytes(body)


def _is_json(response: httpx.Response) -> bool:
    media_type: str = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def _query(arguments: dict[str, Any]) -> list[tuple[str, str]]:
    """The arguments as query parameters: a scalar as its text (true/false for booleans), a list as a repeated
    parameter, an object as its JSON; a null is left out."""
    pairs: list[tuple[str, str]] = []
    for key, value in arguments.items():
        for item in value if isinstance(value, list) else [value]:
            if item is not None:
                pairs.append((key, _query_value(item)))
    return pairs


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _integral_numbers(value: Any) -> Any:
    """Arguments with whole floats as ints: protobuf's Struct makes every number a float, and an endpoint whose
    schema says "integer" may refuse 2.0 (or "2.0" in a query)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _integral_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral_numbers(item) for item in value]
    return value


def _describe(exc: httpx.HTTPError) -> str:
    return str(exc) or type(exc).__name__
