"""Metrics: handler timing kept by the hot loop, and the Prometheus text ``/metrics`` serves.

Counting costs nothing extra: the counters are the channels' own
(:class:`~zmqapp.channel.ChannelStats`). Timing is kept only while the app serves HTTP
(``HTTP`` config): a histogram per channel of the seconds from reading a message to its
handlers' return. On the fast path (one plain handler, single-frame messages) the loop reads
the clock once per 16 messages and records each group at its average, unless a handler proves
slow, when every message is timed on its own.

The exposition is written with ``prometheus_client`` (``pip install 'zmqapp[metrics]'``),
from status snapshots (:meth:`zmqapp.runtime.Runtime.snapshot`), so a ``--workers`` parent can
serve the series of every worker, each with its ``worker`` label.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Any

#: Histogram bucket bounds in seconds (the last bucket, +Inf, is implied).
BUCKETS: tuple[float, ...] = (
    0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class Timing:
    """A histogram of processing seconds: counts per bucket (not cumulative) and the sum."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float, count: int = 1) -> None:
        """Record ``count`` messages that took ``seconds`` each."""
        self.counts[bisect_left(BUCKETS, seconds)] += count
        self.sum += seconds * count

    def as_dict(self) -> dict[str, Any]:
        return {"buckets": list(BUCKETS), "counts": list(self.counts), "sum": self.sum}


class MissingPrometheus(Exception):
    """``prometheus_client`` is not installed."""


#: What /metrics says when prometheus_client is missing.
INSTALL_HINT = (
    "/metrics needs the prometheus_client package; install it with pip install 'zmqapp[metrics]'\n"
)


def exposition(
    snapshots: Iterable[dict[str, Any]], version: str, accept: str = ""
) -> tuple[bytes, str]:
    """The exposition of ``snapshots`` (one per process; a ``worker`` key in each adds that
    label) in the format the scraper's ``accept`` header asks for (Prometheus text by
    default, or OpenMetrics), and its content type. Raises :class:`MissingPrometheus`."""
    try:
        from prometheus_client.core import (
            CollectorRegistry,
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )
        from prometheus_client.exposition import choose_encoder
    except ImportError:
        raise MissingPrometheus(INSTALL_HINT) from None

    snapshots = list(snapshots)
    pooled = any("worker" in snap for snap in snapshots)

    class Collector:
        def collect(self) -> Iterator[Any]:
            base = ["app", "worker"] if pooled else ["app"]
            with_channel = [*base, "channel"]

            def family(kind: Any, name: str, doc: str, extra: tuple[str, ...] = ()) -> Any:
                return kind(name, doc, labels=[*with_channel, *extra])

            received = family(
                CounterMetricFamily,
                "zmqapp_messages_received",
                "Messages read from the channel's socket",
            )
            processed = family(
                CounterMetricFamily,
                "zmqapp_messages_processed",
                "Messages processed, by outcome",
                ("status",),
            )
            sent = family(CounterMetricFamily, "zmqapp_messages_sent", "Messages handed to ZeroMQ")
            dropped = family(
                CounterMetricFamily,
                "zmqapp_messages_dropped",
                "Messages lost, by reason",
                ("reason",),
            )
            queue = family(
                GaugeMetricFamily,
                "zmqapp_send_queue_depth",
                "Messages waiting in zmqapp for the socket to take them",
            )
            in_flight = family(
                GaugeMetricFamily,
                "zmqapp_in_flight",
                "Coroutine and threaded handler calls running",
            )
            peers = family(
                GaugeMetricFamily, "zmqapp_peers", "Connected peers, from the socket monitor"
            )
            requests = family(
                CounterMetricFamily,
                "zmqapp_requests",
                "app.request calls, by outcome",
                ("outcome",),
            )
            handshakes = family(
                CounterMetricFamily,
                "zmqapp_handshake_failures",
                "Failed or refused handshakes, by reason",
                ("reason",),
            )
            timing = family(
                HistogramMetricFamily,
                "zmqapp_message_processing_seconds",
                "Seconds from reading a message to its handlers' return",
            )
            lag = GaugeMetricFamily(
                "zmqapp_loop_lag_seconds",
                "How late the event loop ran a timer, lately",
                labels=base,
            )
            info = GaugeMetricFamily("zmqapp_info", "The app and zmqapp's version",
                                     labels=["app", "version"])  # fmt: skip
            apps = set()
            for snap in snapshots:
                head = [str(snap["app"])] + ([str(snap.get("worker", ""))] if pooled else [])
                apps.add(str(snap["app"]))
                lag.add_metric(head, float(snap.get("loop_lag", 0.0)))
                for name, ch in snap.get("channels", {}).items():
                    labels = [*head, name]
                    received.add_metric(labels, ch["received"])
                    ok = ch["handled"] - ch["errors"]
                    for status, value in (
                        ("ok", ok),
                        ("error", ch["errors"]),
                        ("decode_failed", ch["decode_failed"]),
                    ):
                        processed.add_metric([*labels, status], value)
                    sent.add_metric(labels, ch["sent"])
                    for reason, value in ch.get("drops", {}).items():
                        dropped.add_metric([*labels, reason], value)
                    queue.add_metric(labels, ch["queue"])
                    in_flight.add_metric(labels, ch["in_flight"])
                    peers.add_metric(labels, ch["peers"])
                    for outcome, value in ch.get("requests", {}).items():
                        requests.add_metric([*labels, outcome], value)
                    for reason, value in ch.get("handshake_failures", {}).items():
                        handshakes.add_metric([*labels, reason], value)
                    hist = ch.get("timing")
                    if hist:
                        cumulative, running = [], 0
                        bounds = [*(repr(b) for b in hist["buckets"]), "+Inf"]
                        for bound, count in zip(bounds, hist["counts"], strict=True):
                            running += count
                            cumulative.append((bound, running))
                        timing.add_metric(labels, cumulative, hist["sum"])
            for app in sorted(apps):
                info.add_metric([app, version], 1)
            yield from (received, processed, sent, dropped, queue, in_flight, peers,
                        requests, handshakes, timing, lag, info)  # fmt: skip

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
