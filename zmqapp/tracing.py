"""OpenTelemetry tracing, by the messaging conventions, when a tracer provider is configured.

With ``opentelemetry-api`` installed (``pip install 'zmqapp[otel]'``) and a tracer provider
set (``opentelemetry.trace.set_tracer_provider(...)``, before the app starts), every handled
message is a CONSUMER span ``process {channel}``, every ``app.send`` and ``send_to`` a
PRODUCER span ``send {channel}``, and every ``app.request`` a CLIENT span
``request {channel}``, each with ``messaging.system = "zeromq"``,
``messaging.operation.name``/``.type``, ``messaging.destination.name`` (the channel) and
``messaging.message.body.size``; a failure adds ``error.type`` and an error status.
Without a provider, nothing is traced and the hot loop pays nothing.

Context crosses the wire only on channels declared with ``trace=True``, and both ends must
say so: then one extra frame, just before the body (after a ROUTER's envelope and a SUB's
topic, when there is one), carries the W3C trace context::

    ZMQAPP-TRACE {"traceparent": "00-<trace id>-<span id>-01", "tracestate": "..."}

A channel without ``trace=True`` never sends such a frame, so plain ZeroMQ peers never see
one. Replies carry none: the server's span is already a child of the request's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .channel import Channel
    from .message import Frames

#: The first bytes of a trace-context frame.
TRACE_PREFIX = b"ZMQAPP-TRACE "
_SYSTEM = "zeromq"


def tracer_for(app_name: str) -> Tracer | None:
    """A :class:`Tracer` if opentelemetry is installed and a real tracer provider is set."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None  # nobody configured tracing: stay out of the way
    from . import __version__

    return Tracer(trace.get_tracer("zmqapp", __version__), app_name)


class Tracer:
    """Makes zmqapp's spans and carries their context over ``trace=True`` channels."""

    def __init__(self, tracer: Any, app_name: str) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.tracer = tracer
        self.app_name = app_name
        self.kinds = trace.SpanKind
        self.status = trace.Status
        self.error = trace.StatusCode.ERROR
        self.current = trace.get_current_span
        self.propagator = TraceContextTextMapPropagator()

    @contextmanager
    def span(
        self,
        operation: str,
        operation_type: str,
        kind: str,
        channel: Channel,
        size: int,
        parent: Any = None,
    ) -> Iterator[Any]:
        attributes = {
            "messaging.system": _SYSTEM,
            "messaging.operation.name": operation,
            "messaging.operation.type": operation_type,
            "messaging.destination.name": channel.name,
            "messaging.message.body.size": size,
        }
        with self.tracer.start_as_current_span(
            f"{operation} {channel.name}",
            kind=getattr(self.kinds, kind),
            context=parent,
            attributes=attributes,
            record_exception=True,
            set_status_on_exception=True,
        ) as span:
            yield span

    def process(self, channel: Channel, body_size: int, parent: Any) -> Any:
        """The CONSUMER span of handling one message (``parent``: its extracted context)."""
        return self.span("process", "process", "CONSUMER", channel, body_size, parent)

    def send(self, channel: Channel, body_size: int) -> Any:
        """The PRODUCER span of one ``app.send`` or ``send_to``."""
        return self.span("send", "send", "PRODUCER", channel, body_size)

    def request(self, channel: Channel, body_size: int) -> Any:
        """The CLIENT span of one ``app.request``."""
        return self.span("request", "send", "CLIENT", channel, body_size)

    def failed(self, exc: BaseException) -> None:
        """Mark the current span (a handler's) as failed with ``exc``."""
        span = self.current()
        span.set_attribute("error.type", type(exc).__qualname__)
        span.record_exception(exc)
        span.set_status(self.status(self.error, str(exc)))

    def header(self) -> bytes:
        """The trace-context frame for the current span."""
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier)
        return TRACE_PREFIX + json.dumps(carrier, separators=(",", ":")).encode()

    def context_of(self, header: bytes) -> Any:
        """The context a trace-context frame carries (an empty one if it does not parse)."""
        try:
            carrier = json.loads(header[len(TRACE_PREFIX) :])
            if not isinstance(carrier, dict):
                carrier = {}
        except ValueError:
            carrier = {}
        return self.propagator.extract({str(k): str(v) for k, v in carrier.items()})


def header_index(frames: Frames, channel: Channel, body_start: int) -> int | None:
    """Where the trace-context frame of a received message is, if it has one: just before
    its body (``body_start``: after a ROUTER's envelope), or after a SUB's topic."""
    if len(frames) > body_start + 1 and frames[body_start].startswith(TRACE_PREFIX):
        return body_start
    if channel.kind.topical and len(frames) >= 3 and frames[1].startswith(TRACE_PREFIX):
        return 1
    return None


def body_size(frames: Frames) -> int:
    return sum(len(frame) for frame in frames)
