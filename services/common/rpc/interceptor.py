"""The one place around every RPC: who is calling, a request id, and domain errors turned into gRPC statuses.

- Every call is authenticated (services.common.auth) before its handler runs, and runs as that caller
  (services.common.identity.current_caller). Methods of an internal API (a package `*.internal.*`) are for the
  platform's own services only.
- Requests are decoded here, in binary protobuf or, for a call the gateway marks as JSON, the proto3 JSON mapping
  (services.common.rpc.codec); a body that is not the method's message answers INVALID_ARGUMENT, naming the message.
- With tracing on (services.common.tracing), each call is a SERVER span, the child of the trace context the
  caller sent (W3C traceparent in its metadata), named and attributed after the RPC semantic conventions.
- Servicers and domain code raise `services.common.errors` exceptions; this interceptor answers them with the
  matching status code and the exception's message. Anything else is a bug: it is logged with its traceback and
  answered INTERNAL, naming the request id to look for in the logs.
"""

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry import trace

from services.common import errors, metrics, tracing
from services.common.auth import Authenticator
from services.common.identity import set_caller
from services.common.logs import request_id
from services.common.metrics import method_metrics
from services.common.rpc.codec import decode, deferred, encoder
from services.common.rpc.status import status_code, status_for

log = logging.getLogger(__name__)

#: Metadata key of the request id: taken from the caller when it sends one, else generated.
REQUEST_ID_KEY = "x-request-id"


def is_internal(method: str) -> bool:
    """Whether `method` (/package.Service/Method) belongs to an internal API, e.g. agentplatform.runs.internal.v1."""
    return ".internal." in method.split("/", 2)[1] if method.count("/") >= 2 else False


class _RpcScope:
    """Request id, timing, logging and error mapping around one RPC."""

    def __init__(self, method: str, context: grpc.aio.ServicerContext) -> None:
        self.method = method
        self.metrics = method_metrics(method)
        self.context = context
        self.metadata = dict(context.invocation_metadata() or ())
        self.request_id = str(self.metadata.get(REQUEST_ID_KEY) or uuid.uuid4().hex[:16])
        self.started = time.perf_counter()
        # No reset needed: grpc.aio runs every RPC in its own task, so the value stays with this RPC.
        request_id.set(self.request_id)
        self.span: trace.Span | None = None

    def traced(self) -> AbstractContextManager[object]:
        """The RPC's SERVER span as the current one while the block runs; nothing at all with tracing off."""
        if not tracing.enabled():
            return nullcontext()
        self.span = tracing.start_rpc_span(self.method, self.metadata)
        # The status is set by done(), from the code the call ends with, not from the exception that ended it.
        return trace.use_span(self.span, end_on_exit=True, record_exception=False, set_status_on_exception=False)

    async def fail(self, exc: BaseException) -> None:
        """Abort the RPC with the status that fits `exc` (which context.abort raises as AbortError)."""
        if isinstance(exc, errors.DomainError):
            code = status_for(exc)
            self.done(code)
            await self.context.abort(code, str(exc), trailing_metadata=self._trailers(_status_details(code, exc)))
        log.exception("unhandled error in %s", self.method)
        self.done(grpc.StatusCode.INTERNAL)
        await self.context.abort(
            grpc.StatusCode.INTERNAL,
            f"internal error; the server log has details under request id {self.request_id}",
            trailing_metadata=self._trailers(()),
        )

    def _trailers(self, extra: tuple[tuple[str, bytes], ...]) -> tuple[tuple[str, str | bytes], ...]:
        # abort replaces the trailing metadata set at the start: the request id goes again.
        return ((REQUEST_ID_KEY, self.request_id), *extra)

    def done(self, code: grpc.StatusCode) -> None:
        elapsed = time.perf_counter() - self.started
        self.metrics.handled(code.name, elapsed)
        if self.span is not None:
            tracing.rpc_status(self.span, code.value[0])
        # Successful calls at DEBUG: the engine makes a dozen internal calls per run, and a line for each is
        # most of the log and a measurable share of the CPU. Every failure stays at INFO.
        level = logging.DEBUG if code == grpc.StatusCode.OK else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, "%s %s %.1fms", self.method, code.name, elapsed * 1000)


def _status_details(code: grpc.StatusCode, exc: errors.DomainError) -> tuple[tuple[str, bytes], ...]:
    """The rich status (google.rpc.Status) of an error that carries more than a message: a ResourceExhausted
    with a retry hint gets a standard RetryInfo, which gRPC clients and Envoy know how to read."""
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is None:
        return ()
    retry_info = error_details_pb2.RetryInfo()
    retry_info.retry_delay.FromTimedelta(timedelta(seconds=retry_after))
    detail = any_pb2.Any()
    detail.Pack(retry_info)
    status = status_pb2.Status(code=code.value[0], message=str(exc), details=[detail])
    return tuple(rpc_status.to_status(status).trailing_metadata)


def _code_of(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """The status a servicer set with context.abort or set_code (UNKNOWN when it set none)."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return status_code(code) if isinstance(code, int) else grpc.StatusCode.UNKNOWN


def _is_abort(exc: BaseException) -> bool:
    # context.abort() raises AbortError; it carries a status already set by the servicer.
    return isinstance(exc, grpc.aio.AbortError)


def _authorize(auth: Authenticator, scope: _RpcScope) -> None:
    internal = is_internal(scope.method)
    caller = auth.authenticate(scope.metadata, internal=internal)
    if internal and not (caller.service or auth.open):
        metrics.AUTH_FAILURES.labels("internal_api").inc()
        raise errors.PermissionDenied(
            f"{scope.method.split('/')[1]} is an internal API: only the platform's own services may call it"
        )
    set_caller(caller)


@asynccontextmanager
async def _rpc(
    auth: Authenticator, method: str, context: grpc.aio.ServicerContext, request: Any, *, streaming: bool
) -> AsyncIterator[Any]:
    """Around one RPC's handler: request id out, the caller authenticated, the request decoded (what the block
    gets), errors mapped to their status, the outcome logged.

    The request id goes back in the trailing metadata of every RPC, which costs nothing extra (it travels with
    the status). A stream also sends it first, in its initial metadata, so a client has it while the stream
    lasts; for a unary call that would be a separate send per call, a measurable share of an internal call.
    """
    scope = _RpcScope(method, context)
    context.set_trailing_metadata(((REQUEST_ID_KEY, scope.request_id),))
    if streaming:
        scope.metrics.streams.inc()
    with scope.traced():
        try:
            if streaming:
                await context.send_initial_metadata(((REQUEST_ID_KEY, scope.request_id),))
            _authorize(auth, scope)
            yield decode(request, scope.metadata)
        except asyncio.CancelledError:
            # The client went away (or its deadline passed): nobody reads a status, but the count must have it.
            scope.done(grpc.StatusCode.CANCELLED)
            raise
        except Exception as exc:
            if _is_abort(exc):
                # A servicer that aborted on its own set the status: count what it set.
                scope.done(_code_of(context))
                raise
            await scope.fail(exc)
        else:
            scope.done(grpc.StatusCode.OK)
        finally:
            if streaming:
                scope.metrics.streams.dec()


def _wrap_unary(
    auth: Authenticator, method: str, behavior: Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with _rpc(auth, method, context, request, streaming=False) as decoded:
            return await behavior(decoded, context)

    return handler


def _wrap_stream(
    auth: Authenticator, method: str, behavior: Callable[..., AsyncIterator[Any]]
) -> Callable[..., AsyncIterator[Any]]:
    """Unary-stream and stream-stream handlers alike: the request (or request iterator) is passed through. (A
    request stream's messages are the internal executor link's; an undecodable one ends that stream.)"""

    async def handler(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async with _rpc(auth, method, context, request, streaming=True) as decoded:
            async for response in behavior(decoded, context):
                yield response

    return handler


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every unary-unary, unary-stream and stream-stream handler of a server (the kinds the protos use)."""

    def __init__(self, auth: Authenticator) -> None:
        self._auth = auth

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        # Health and reflection are not ours: their errors and logging stay as grpc made them. Both are open:
        # load balancers and probes check health without credentials, and reflection only describes the API.
        if method.startswith(("/grpc.health.", "/grpc.reflection.")):
            return handler
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(self._auth, method, handler.unary_unary),
                request_deserializer=deferred(handler.request_deserializer),
                response_serializer=encoder(handler.response_serializer),
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(self._auth, method, handler.unary_stream),
                request_deserializer=deferred(handler.request_deserializer),
                response_serializer=encoder(handler.response_serializer),
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                _wrap_stream(self._auth, method, handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
