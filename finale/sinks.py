"""Where the analyzer's micro-batches go: a sink is a foreachBatch callable (batch, batch_id) -> None.

Kafka today: `kafka_sink(bootstrap, topic, to_records)` with `alert_records` (key = alert_id, value =
the alert as JSON) or `dead_letter_records` (the line unchanged, why in the headers). Another sink
(a file, a webhook) is one more callable of the same shape, passed to build_queries as alert_sink.
"""
from __future__ import annotations

from typing import Callable

from pyspark.sql import DataFrame, functions as F

from rules import ALERT_COLUMNS

# A batch function: (micro-batch DataFrame, batch id) -> None, as foreachBatch calls it.
BatchSink = Callable[[DataFrame, int], None]


def alert_records(alerts_batch: DataFrame) -> DataFrame:
    """Alerts -> Kafka records: key = alert_id, value = every field + emitted_at as one JSON object."""
    return alerts_batch.select(
        F.col("alert_id").alias("key"),
        F.to_json(F.struct(*ALERT_COLUMNS, "emitted_at")).alias("value"),
    )


def dead_letter_records(dead: DataFrame, source_topic: str) -> DataFrame:
    """Dead letters -> Kafka records: value = the line unchanged (replayable), why in the headers."""
    return dead.select(
        F.col("value"),
        F.array(
            F.struct(F.lit("reason").alias("key"), F.encode("reason", "UTF-8").alias("value")),
            F.struct(F.lit("source").alias("key"), F.encode(F.lit(source_topic), "UTF-8").alias("value")),
        ).alias("headers"),
    )


def kafka_sink(bootstrap_servers: str, topic: str,
               to_records: Callable[[DataFrame], DataFrame]) -> BatchSink:
    """A foreachBatch sink writing `to_records(batch)` (key/value/headers columns) to a Kafka topic."""
    def write(batch: DataFrame, batch_id: int) -> None:
        (to_records(batch).write.format("kafka")
         .option("kafka.bootstrap.servers", bootstrap_servers)
         .option("topic", topic)
         .save())
    return write
