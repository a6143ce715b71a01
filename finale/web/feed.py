"""The dashboard's Kafka reader: one background thread, one consumer on the alerts and the
window-metrics topics, without a consumer group (nothing committed, nothing to clean up).

At start it seeks every partition to the first record stamped `span_s` ago (Kafka's time index),
so the page opens with the last minutes already drawn, then follows the topics. A broker that goes
away is retried every few seconds; the page says so meanwhile (DashboardState.feed).
"""
from __future__ import annotations

import threading
import time

from finale.common import alert as alert_record
from finale.common import window_metrics
from finale.tools import kafka_topics
from finale.web.state import DashboardState

RETRY_S = 2.0


def check_topics(bootstrap_servers: str, topics: list[str], timeout_s: float = 5.0) -> str | None:
    """None if the broker answers and the topics exist, else one line saying what is wrong."""
    return kafka_topics.check_topics(bootstrap_servers, topics, timeout_s,
                                     client_id="chaussettes-dashboard-check")


class KafkaFeed(threading.Thread):
    """Alerts and window metrics from Kafka into a DashboardState, until stop()."""

    def __init__(self, state: DashboardState, bootstrap_servers: str, alerts_topic: str,
                 metrics_topic: str, span_s: float):
        super().__init__(name="dashboard-kafka-feed", daemon=True)
        self.state, self.bootstrap_servers = state, bootstrap_servers
        self.alerts_topic, self.metrics_topic, self.span_s = alerts_topic, metrics_topic, span_s
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        from kafka.errors import KafkaError

        while not self.stopping.is_set():
            consumer = None
            try:
                consumer = self._open()
                self.state.set_feed(True)
                while not self.stopping.is_set():
                    for records in consumer.poll(timeout_ms=500).values():
                        for record in records:
                            self._handle(record)
            except (KafkaError, OSError) as error:
                self.state.set_feed(False, f"Kafka at {self.bootstrap_servers}: "
                                           f"{type(error).__name__}")
                self.stopping.wait(RETRY_S)
            finally:
                if consumer is not None:
                    consumer.close(autocommit=False)

    def _open(self):
        from kafka import KafkaConsumer, TopicPartition
        from kafka.errors import KafkaError

        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap_servers.split(","),
                                 group_id=None, enable_auto_commit=False,
                                 client_id="chaussettes-dashboard", bootstrap_timeout_ms=5_000)
        try:
            partitions = []
            for topic in (self.alerts_topic, self.metrics_topic):
                numbers = consumer.partitions_for_topic(topic)
                if not numbers:
                    raise KafkaError(f"topic {topic} does not exist")
                partitions += [TopicPartition(topic, number) for number in sorted(numbers)]
            consumer.assign(partitions)
            since_ms = int((time.time() - self.span_s) * 1000)
            starts = consumer.offsets_for_times({tp: since_ms for tp in partitions})
            for tp in partitions:
                found = starts.get(tp)
                if found is None:
                    consumer.seek_to_end(tp)
                else:
                    consumer.seek(tp, found.offset)
        except BaseException:
            consumer.close(autocommit=False)
            raise
        return consumer

    def _handle(self, record) -> None:
        if record.topic == self.metrics_topic:
            decoded = window_metrics.decode(record.value)
            if decoded is not None:
                self.state.add_metrics(decoded)
        else:
            decoded = alert_record.decode(record.value, record.key)
            if decoded is not None:
                self.state.add_alert(decoded)
