"""Where the analyzer's micro-batches go: a sink is a foreachBatch callable (batch, batch_id) -> None.

Kafka today: `kafka_sink(bootstrap, topic, to_records)` with `alert_records` (key = alert_id, value =
the alert as JSON) or `dead_letter_records` (the record's key and line unchanged, why and where from in the headers). Another sink
(a file, a webhook) is one more callable of the same shape, passed to build_queries as alert_sink.
"""
from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from finale.analyzer.rules import ALERT_COLUMNS

# A batch function: (micro-batch DataFrame, batch id) -> None, as foreachBatch calls it.
BatchSink = Callable[[DataFrame, int], None]


def alert_records(alerts_batch: DataFrame) -> DataFrame:
    """Alerts -> Kafka records: key = alert_id, value = every field + emitted_at as one JSON object."""
    return alerts_batch.select(
        F.col("alert_id").alias("key"),
        F.to_json(F.struct(*ALERT_COLUMNS, "emitted_at")).alias("value"),
    )


def dead_letter_records(dead: DataFrame, source_topic: str) -> DataFrame:
    """Dead letters -> Kafka records: key and value = those of the original record, unchanged (a
    fixed line can be sent back as is); why and where it came from in the headers: `reason`,
    `source` (topic), `source_partition`, `source_offset`, `source_timestamp` (the original record's
    Kafka timestamp, milliseconds since the epoch), all UTF-8 text. A header whose field the source
    does not have (not a Kafka source) is left out."""
    def header(name: str, value) -> Column:
        return F.struct(F.lit(name).alias("key"),
                        F.encode(value.cast("string"), "UTF-8").alias("value"))

    headers = F.array(
        header("reason", F.col("reason")),
        header("source", F.lit(source_topic)),
        header("source_partition", F.col("kafka_partition")),
        header("source_offset", F.col("kafka_offset")),
        header("source_timestamp", F.unix_millis(F.col("kafka_timestamp"))),
    )
    return dead.select(
        F.col("kafka_key").alias("key"),
        F.col("value"),
        F.filter(headers, lambda item: item["value"].isNotNull()).alias("headers"),
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
