"""RPC metrics: every call counted when it starts and when it ends (with its status code), and
timed, by the standard grpc_server_* names (metrics.py).

An interceptor of the grpc.aio server, so it sees every call the same way, whether the call is
served on the event loop (Heartbeat, most Matches and Releases) or stepped on a worker thread
(edge.py): it wraps the handler's behaviour and reads the status from the call's context when the
behaviour ends or aborts.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from livestate.server.core import metrics

Labels = tuple[str, str, str]


Context = Any  # grpc.aio.ServicerContext, whose stubs want type arguments it does not take at runtime


def _kind(handler: Any) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


def _code(context: Context, failed: BaseException | None) -> str:
    if isinstance(failed, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED.name
    code = context.code()
    if code is None or code == 0 or code == grpc.StatusCode.OK:
        return grpc.StatusCode.UNKNOWN.name if failed is not None and not _aborted(failed) else "OK"
    if isinstance(code, grpc.StatusCode):
        return code.name
    return next((c.name for c in grpc.StatusCode if c.value[0] == code), str(code))


def _aborted(exc: BaseException) -> bool:
    return isinstance(exc, grpc.aio.AbortError)


def _done(labels: Labels, started: float, context: Context, failed: BaseException | None) -> None:
    metrics.RPC_SECONDS.labels(*labels).observe(time.perf_counter() - started)
    metrics.RPC_HANDLED.labels(*labels, _code(context, failed)).inc()


def _single(behavior: Callable[..., Any], labels: Labels) -> Callable[..., Awaitable[Any]]:
    async def measured(request: Any, context: Context) -> Any:
        metrics.RPC_STARTED.labels(*labels).inc()
        started = time.perf_counter()
        try:
            result = behavior(request, context)
            if inspect.isawaitable(result):
                result = await result
        except BaseException as exc:
            _done(labels, started, context, exc)
            raise
        _done(labels, started, context, None)
        return result

    return measured


def _streamed(behavior: Callable[..., Any], labels: Labels) -> Callable[..., AsyncIterator[Any]]:
    async def measured(request: Any, context: Context) -> AsyncIterator[Any]:
        metrics.RPC_STARTED.labels(*labels).inc()
        started = time.perf_counter()
        try:
            result = behavior(request, context)
            if inspect.isasyncgen(result):
                async for item in result:
                    yield item
            elif inspect.isawaitable(result):
                # A handler that writes through the context and returns.
                await result
            elif result is not None:
                for item in result:
                    yield item
        except BaseException as exc:
            _done(labels, started, context, exc)
            raise
        _done(labels, started, context, None)

    return measured


class RpcMetrics(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(details)
        if handler is None:
            return handler
        service, _, method = details.method.lstrip("/").rpartition("/")
        labels = (_kind(handler), service, method)
        if handler.unary_unary:
            return handler._replace(unary_unary=_single(handler.unary_unary, labels))
        if handler.stream_unary:
            return handler._replace(stream_unary=_single(handler.stream_unary, labels))
        if handler.unary_stream:
            return handler._replace(unary_stream=_streamed(handler.unary_stream, labels))
        return handler._replace(stream_stream=_streamed(handler.stream_stream, labels))
