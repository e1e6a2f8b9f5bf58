"""The API edge: every call is served from one asyncio event loop (grpc.aio) per process.

A threaded gRPC server holds a thread per open call: thousands of agent Heartbeat streams meant
thousands of threads sharing one GIL, and beat acks that queued behind each other's wake-ups.
Here an open call costs a coroutine, not a thread. Heartbeat streams run on the loop itself
(HeartbeatServicer.Heartbeat: a beat hands its script to the batcher, which talks to Redis on the
same loop), and so does a plain Match (Edge.try_on_loop: its round trips go through the batcher
too; what needs more continues on the pool). Every other method is the servicers' plain blocking
code, run on a bounded pool of `max_workers` threads so that a Redis round trip never stalls the
loop; Watch and Assignments step their generators on the same pool, one step at a time.

Each call passes the same admission as before it reaches the servicer: the interceptors of
auth.py, budgets.py and decoding.py, applied by `Edge.service` in the order given. Their
blocking code sees a `CallContext`, whose `abort_with_status` ends the call with that status.

The loop is one per process, shared by every server in it (tests start several): grpc.aio binds
its completion queue to the loops that use it, and more than one loop per process is not a
configuration it supports well.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import grpc

from livestate.server.api import auth
from livestate.server.api.auth import AuthInterceptor, Identity
from livestate.server.api.budgets import Budget
from livestate.server.api.decoding import decode
from livestate.server.api.gcpacing import GcPacer
from livestate.server.core.errors import status_of

if TYPE_CHECKING:
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler

T = TypeVar("T")
_END = object()


class EventLoop:
    """The process's gRPC event loop, on a daemon thread of its own, for callers that stay
    synchronous (the CLI, the tests, the maintenance threads)."""

    _shared: EventLoop | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.pacer = GcPacer(self.loop)
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="grpc-loop", daemon=True)
        self._thread.start()
        ready.wait()

    @classmethod
    def shared(cls) -> EventLoop:
        with cls._lock:
            if cls._shared is None:
                cls._shared = EventLoop()
            return cls._shared

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(ready.set)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Runs `coro` on the loop and waits for its result (from any thread but the loop's)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


class Aborted(BaseException):
    """Raised by `CallContext.abort_with_status`. A BaseException, so that no servicer's
    `except Exception` mistakes the end of a call for an error of its own."""

    def __init__(self, status: grpc.Status) -> None:
        super().__init__(status.details)
        self.status = status


class _Status(grpc.Status):
    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: Sequence[Any] = ()) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = tuple(trailing_metadata)


class CallContext:
    """What blocking servicer code may ask of its call, from a pool thread: the subset of
    grpc.ServicerContext livestate uses. `is_active` turns False as soon as the call ends
    (answered, cancelled, or past its deadline), so a waiting loop ends with it."""

    def __init__(self, call: grpc.aio.ServicerContext) -> None:  # type: ignore[type-arg]
        self._call = call
        self.active = True

    def is_active(self) -> bool:
        return self.active and not self._call.done()

    def time_remaining(self) -> float | None:
        remaining: float | None = self._call.time_remaining()
        return remaining

    def invocation_metadata(self) -> Sequence[tuple[str, str | bytes]]:
        return tuple(self._call.invocation_metadata() or ())

    def abort_with_status(self, status: grpc.Status) -> None:
        raise Aborted(status)


async def abort(call: grpc.aio.ServicerContext, status: grpc.Status) -> None:  # type: ignore[type-arg]
    """Ends `call` with `status` (its rich details ride in the trailing metadata)."""
    await call.abort(status.code, status.details, tuple(status.trailing_metadata or ()))


class Collector:
    """Stands in for a server to the generated `add_*Servicer_to_server` functions, keeping the
    method handlers they register."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}

    def add_generic_rpc_handlers(self, handlers: Sequence[Any]) -> None:
        pass  # the same handlers come again by name below

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Handler]) -> None:
        for name, handler in handlers.items():
            self.handlers[f"/{service}/{name}"] = handler


class Edge(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Serves the collected blocking handlers on the loop, each call admitted by `interceptors`
    first; a method given to `serve_on_loop` is served by its coroutine instead."""

    def __init__(
        self,
        handlers: dict[str, Handler],
        interceptors: Sequence[grpc.ServerInterceptor],  # type: ignore[type-arg]
        pool: concurrent.futures.ThreadPoolExecutor,
        access: AuthInterceptor | None,
    ) -> None:
        self._handlers = handlers
        self._interceptors = tuple(interceptors)
        self._pool = pool
        self._access = access
        self._native: dict[str, Handler] = {}

    def serve_on_loop(
        self,
        method: str,
        serve: Callable[[StreamCall], Awaitable[None]],
        *,
        budget: Budget,
        idle_after: float,
        pool: concurrent.futures.ThreadPoolExecutor,
    ) -> None:
        """Serves the bidirectional `method` with the coroutine `serve` instead of its blocking
        handler: admitted by access control and `budget`, its requests decoded (a bad one is
        INVALID_ARGUMENT), closed CANCELLED after `idle_after` seconds of silence, and whatever
        it raises answered as errors.py maps it. Its blocking work (StreamCall.offload) runs on
        `pool`, not the unary one: a burst of it (thousands of agents told to resync at once)
        must not queue ahead of a scheduler's Match."""
        decoder = self._handlers[method].request_deserializer
        access = self._access

        async def bidi(_requests: object, call: grpc.aio.ServicerContext) -> None:  # type: ignore[type-arg]
            identity: Identity | None = None
            idle: asyncio.Timeout | None = None
            taken = False
            try:
                identity = _admit(access, method, call)
                budget.take(identity.name if identity else None)
                taken = True
                async with asyncio.timeout(idle_after) as idle:
                    await serve(StreamCall(call, partial(decode, decoder or _raw), idle, idle_after, pool))
            except Exception as exc:
                silent = isinstance(exc, TimeoutError) and idle is not None and idle.expired()
                await abort(
                    call,
                    _Status(grpc.StatusCode.CANCELLED, f"closed: nothing heard for {idle_after:g}s")
                    if silent
                    else status_of(exc, method),
                )
            finally:
                if taken:
                    budget.give(identity.name if identity else None)

        self._native[method] = grpc.stream_stream_rpc_method_handler(
            bidi, response_serializer=self._handlers[method].response_serializer
        )

    def try_on_loop(
        self,
        method: str,
        fast: Callable[[Any, LoopCall], Awaitable[Any | None]],
        slow: Callable[[Any, Any], Any],
    ) -> None:
        """Serves the unary `method` with the coroutine `fast` first, on the loop, after the same
        admission as any call (access control, request decoding); when `fast` answers None, the
        blocking `slow` (a servicer method, errors mapped) decides on the worker pool. For the
        common case that needs no thread: a plain Match whose round trips go through the batcher."""
        handler = self._handlers[method]
        decoder = handler.request_deserializer or _raw
        access, pool = self._access, self._pool

        async def unary(raw: bytes, call: grpc.aio.ServicerContext) -> Any:  # type: ignore[type-arg]
            context = CallContext(call)

            async def answer() -> Any:
                _admit(access, method, call)
                request = decode(decoder, raw)
                on_loop = LoopCall(call, pool)
                fast_answer = await fast(request, on_loop)
                if fast_answer is not None:
                    return fast_answer
                return await on_loop.offload(slow, request, context)

            return await _answered(call, method, context, answer())

        self._native[method] = grpc.unary_unary_rpc_method_handler(
            unary, response_serializer=handler.response_serializer
        )

    def service(self, details: grpc.HandlerCallDetails) -> Handler | None:
        native = self._native.get(details.method)
        if native is not None:
            return native
        if details.method not in self._handlers:
            return None
        handler = self._admitted(details)
        if handler is None:
            return None
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(details.method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._streamed(details.method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        raise TypeError(f"{details.method}: client-streaming methods must be served natively")

    def _admitted(self, details: grpc.HandlerCallDetails) -> Handler | None:
        """The handler as the interceptors leave it, the first of them outermost."""

        def innermost(d: grpc.HandlerCallDetails) -> Handler | None:
            return self._handlers.get(d.method)

        continuation: Callable[[grpc.HandlerCallDetails], Handler | None] = innermost
        for interceptor in reversed(self._interceptors):
            continuation = _chained(interceptor, continuation)
        return continuation(details)

    def _unary(self, method: str, behavior: Callable[[Any, Any], Any]) -> Callable[..., Awaitable[Any]]:
        """Runs a blocking unary handler on the pool; whatever it raises ends the call with the
        status errors.py maps it to (the one place errors become statuses)."""
        pool = self._pool

        async def unary(request: Any, call: grpc.aio.ServicerContext) -> Any:  # type: ignore[type-arg]
            context = CallContext(call)
            # A context of its own per call: what auth sets for the call stays with it.
            run = contextvars.copy_context().run

            async def answer() -> Any:
                # Scheduled inside _answered: a pool shutting down is mapped like any error.
                return await asyncio.get_running_loop().run_in_executor(pool, run, behavior, request, context)

            return await _answered(call, method, context, answer())

        return unary

    def _streamed(
        self, method: str, behavior: Callable[[Any, Any], Iterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        """Runs a blocking server-streaming handler (a generator) step by step on the pool; what
        it raises is mapped as for unary calls."""
        pool = self._pool

        async def streamed(request: Any, call: grpc.aio.ServicerContext) -> AsyncIterator[Any]:  # type: ignore[type-arg]
            context = CallContext(call)
            # One context for every step: a generator sets and resets it across steps, and the
            # steps run on whichever pool thread is free (never two at once).
            run = contextvars.copy_context().run
            generator: Iterator[Any] | None = None
            step: concurrent.futures.Future[Any] | None = None
            try:
                generator = behavior(request, context)
                while True:
                    step = pool.submit(run, _step, generator)
                    item = await asyncio.wrap_future(step)
                    if item is _END:
                        return
                    yield item
            except Aborted as aborted:
                await abort(call, aborted.status)
            except grpc.RpcError:
                return  # the client cancelled or went away: there is no one to answer
            except Exception as exc:
                await abort(call, status_of(exc, method))
            finally:
                context.active = False
                if generator is not None:
                    _close_later(pool, run, generator, step)

        return streamed


async def _answered(
    call: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    method: str,
    context: CallContext,
    answer: Awaitable[Any],
) -> Any:
    """A unary call's answer; what computing it raised ends the call with the status errors.py
    maps it to (the one place errors become statuses)."""
    try:
        return await answer
    except Aborted as aborted:
        await abort(call, aborted.status)
    except Exception as exc:
        await abort(call, status_of(exc, method))
    finally:
        context.active = False


def _admit(
    access: AuthInterceptor | None,
    method: str,
    call: grpc.aio.ServicerContext,  # type: ignore[type-arg]
) -> Identity | None:
    """Access control for a call served on the loop (raises what refuses it). The identity is
    set for the call: its task has a context of its own, so it stays with the call."""
    identity = access.admit(method, call.invocation_metadata()) if access is not None else None
    auth.current.set(identity)
    return identity


def _raw(data: bytes) -> bytes:
    return data


def _step(generator: Iterator[Any]) -> Any:
    return next(generator, _END)


def _chained(
    interceptor: grpc.ServerInterceptor,  # type: ignore[type-arg]
    continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
) -> Callable[[grpc.HandlerCallDetails], Handler | None]:
    def next_in_chain(details: grpc.HandlerCallDetails) -> Handler | None:
        handler: Handler | None = interceptor.intercept_service(continuation, details)
        return handler

    return next_in_chain


def _close_later(
    pool: concurrent.futures.ThreadPoolExecutor,
    run: Callable[..., Any],
    generator: Iterator[Any],
    step: concurrent.futures.Future[Any] | None,
) -> None:
    """Closes a generator (its `finally` blocks give back budgets and watches) once the step in
    flight, if any, is over: a generator cannot be closed while another thread runs it."""

    def close(_: object = None) -> None:
        with contextlib.suppress(RuntimeError):  # the pool is shut down: the process is stopping
            pool.submit(run, getattr(generator, "close", lambda: None))

    if step is None or step.done():
        close()
    else:
        step.add_done_callback(close)


class LoopCall:
    """A call served on the loop, as its servicer sees it: its deadline, and `offload` for
    blocking code."""

    def __init__(
        self,
        call: grpc.aio.ServicerContext,  # type: ignore[type-arg]
        pool: concurrent.futures.ThreadPoolExecutor,
    ) -> None:
        self._call = call
        self._pool = pool

    def time_remaining(self) -> float | None:
        remaining: float | None = self._call.time_remaining()
        return remaining

    async def offload(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs blocking `fn(*args)` on the pool, with this call's context (its identity)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, contextvars.copy_context().run, fn, *args)


class StreamCall(LoopCall):
    """A bidirectional call served on the loop: decoded requests (None once the peer is done),
    and a close after `idle_after` seconds of silence."""

    def __init__(
        self,
        call: grpc.aio.ServicerContext,  # type: ignore[type-arg]
        decode: Callable[[bytes], Any],
        idle: asyncio.Timeout,
        idle_after: float,
        pool: concurrent.futures.ThreadPoolExecutor,
    ) -> None:
        super().__init__(call, pool)
        self._decode = decode
        self._idle = idle
        self._idle_after = idle_after

    async def read(self) -> Any | None:
        raw = await self._call.read()
        # One timer per stream, pushed back by each message (cheaper than a timeout per read).
        self._idle.reschedule(asyncio.get_running_loop().time() + self._idle_after)
        if raw is grpc.aio.EOF:  # type: ignore[attr-defined]
            return None
        return self._decode(raw)

    async def write(self, message: Any) -> None:
        await self._call.write(message)
