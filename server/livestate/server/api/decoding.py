"""Undecodable requests answer INVALID_ARGUMENT, not INTERNAL.

grpcio answers INTERNAL ("Exception deserializing request!") when a request's bytes do not parse,
before any servicer code runs. This interceptor takes decoding over: the handler receives raw
bytes, parses them itself, and aborts with INVALID_ARGUMENT naming the message when they do not
parse (truncated or fuzzed input, invalid UTF-8 in a string field).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from livestate.server.core.errors import InvalidArgument, to_status

Deserializer = Callable[[bytes], Any]


def decode(deserialize: Deserializer, raw: bytes) -> Any:
    try:
        return deserialize(raw)
    except (DecodeError, UnicodeDecodeError, ValueError) as exc:
        name = getattr(getattr(deserialize, "__self__", None), "__name__", "request")
        raise InvalidArgument(name, "request bytes are not a valid message") from exc


class DecodeRequests(grpc.ServerInterceptor):  # type: ignore[type-arg]
    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = continuation(handler_call_details)
        deserialize = getattr(handler, "request_deserializer", None)
        if handler is None or deserialize is None:
            return handler
        if handler.request_streaming:
            inner = handler.stream_stream or handler.stream_unary
            field = "stream_stream" if handler.stream_stream else "stream_unary"

            # A bad message mid-stream raises InvalidArgument inside the servicer's loop, where
            # the edge maps it to its status (edge.py).
            def streaming(raw_iter: Iterator[bytes], context: grpc.ServicerContext) -> Any:
                return inner((decode(deserialize, raw) for raw in raw_iter), context)

            return handler._replace(request_deserializer=None, **{field: streaming})
        inner = handler.unary_unary or handler.unary_stream
        field = "unary_unary" if handler.unary_unary else "unary_stream"

        def unary(raw: bytes, context: grpc.ServicerContext) -> Any:
            try:
                request = decode(deserialize, raw)
            except InvalidArgument as err:
                context.abort_with_status(to_status(err))
            return inner(request, context)

        return handler._replace(request_deserializer=None, **{field: unary})
