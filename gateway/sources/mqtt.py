"""The MQTT source: O(1) intake in the client callback, decoding in micro-batches.

The client callback only appends `(topic, payload)` to a bounded deque and wakes the
pipeline task, which then decodes everything queued in one go. When the deque is full the
pipeline's `queue.when_full` policy applies: `drop_oldest` (counted), or `block`, which
stops reading the socket so that the broker holds the backlog (QoS 1, persistent session).

QoS 1 deliveries come through `on_delivery` unacknowledged, and are acknowledged after the
commit that holds their effect (gateway/delivery.py decides, and skips redeliveries).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from gateway.decode import Decoder, RejectRaw, TopicPatterns
from gateway.delivery import Delivery, fingerprint
from gateway.metrics import Metrics
from gateway.record import Record
from gateway.spec import MqttSourceConfig, QueueConfig

SOURCE_NAME = "mqtt"


class MqttSource:
    def __init__(
        self,
        configs: list[MqttSourceConfig],
        key: tuple[str, ...],
        reject: RejectRaw,
        metrics: Metrics,
        queue: QueueConfig,
        now: Callable[[], float],
        ready: asyncio.Event,
    ) -> None:
        self._now = now
        self._routes: list[tuple[TopicPatterns, Decoder]] = []
        self.subscriptions: list[tuple[str, int]] = []
        for cfg in configs:
            patterns = TopicPatterns(cfg.topics)
            decoder = Decoder(
                patterns,
                key,
                reject,
                fmt=cfg.format,
                timestamp=cfg.timestamp,
                max_payload=cfg.max_payload,
                max_clock_skew=cfg.max_clock_skew,
                max_topic_length=cfg.max_topic_length,
                max_key_length=cfg.max_key_length,
            )
            self._routes.append((patterns, decoder))
            self.subscriptions += [(f, cfg.qos) for f in patterns.filters]
        # Several routes: a topic is matched against each cache, so bound it before.
        self._topic_limit = min((d.max_topic_length for _, d in self._routes), default=0)
        self._reject = reject
        self._metrics = metrics
        self._queue: deque[tuple[str, bytes, float, tuple[int, bool, int] | None]] = deque()
        self.delivery: Delivery | None = None
        self._max = queue.size
        self._block = queue.when_full == "block"
        self.pause: Callable[[], None] | None = None
        self.resume: Callable[[], None] | None = None
        self._paused = False
        self.ready = ready  # shared by all sources: the pipeline task waits on it
        metrics.gauges["queue_depth"] = lambda: {(("queue", "intake"),): len(self._queue)}

    def on_message(self, topic: str, payload: bytes) -> None:
        """Called by the MQTT client for each QoS 0 message: O(1), never blocks."""
        self._enqueue(topic, payload, None)

    def on_delivery(
        self, topic: str, payload: bytes, packet_id: int, dup: bool, generation: int
    ) -> None:
        """A QoS 1 message, to be acknowledged once its effect is committed."""
        self._enqueue(topic, payload, (packet_id, dup, generation))

    def _enqueue(self, topic: str, payload: bytes, ack: tuple[int, bool, int] | None) -> None:
        queue = self._queue
        queue.append((topic, payload, self._now(), ack))
        if len(queue) >= self._max:
            if self._block and self.pause is not None:
                if not self._paused:
                    self._paused = True
                    self.pause()
            else:
                old_topic, old_payload, _, dropped = queue.popleft()
                self._metrics.queue_dropped["intake"] += 1
                if dropped is not None and self.delivery is not None:
                    packet_id, dup, generation = dropped  # dropped by policy: acknowledged
                    crc = fingerprint(old_topic, old_payload)
                    self.delivery.admit(packet_id, dup, crc, generation)
        self.ready.set()

    def take(self, max_messages: int = 4096) -> list[Record]:
        """Decode up to `max_messages` queued messages into records."""
        queue = self._queue
        out: list[Record] = []
        n = min(len(queue), max_messages)
        nbytes = 0
        single = self._routes[0][1] if len(self._routes) == 1 else None
        single_limit = self._topic_limit
        delivery = self.delivery
        for _ in range(n):
            topic, payload, arrival, ack = queue.popleft()
            nbytes += len(payload)
            if (
                ack is not None
                and delivery is not None
                and not delivery.admit(ack[0], ack[1], fingerprint(topic, payload), ack[2])
            ):
                continue  # taken in before: acknowledged after the next commit, not counted
            if single is not None:
                single.decode(topic, payload, arrival, out)
                continue
            if len(topic) > single_limit:
                self._routes[0][1].topic_too_long(topic, payload)
                continue
            for patterns, decoder in self._routes:
                if patterns.match(topic) is not None:
                    decoder.decode(topic, payload, arrival, out)
                    break
            else:
                self._reject(
                    topic, payload, "unknown_topic", "no source pattern matches this topic"
                )
        self._metrics.messages_in[SOURCE_NAME] += n
        self._metrics.bytes_in[SOURCE_NAME] += nbytes
        if self._paused and len(queue) < self._max // 2 and self.resume is not None:
            self._paused = False
            self.resume()
        return out

    @property
    def depth(self) -> int:
        return len(self._queue)

    def oldest(self) -> float | None:
        """When the oldest message waiting arrived (the clock's time); None when none is."""
        queue = self._queue
        return queue[0][2] if queue else None
