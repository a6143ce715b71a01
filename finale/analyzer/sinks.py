"""Where the analyzer's micro-batches go: a sink is a foreachBatch callable
(batch, batch_id) -> None.

- `kafka_sink(bootstrap, topic, to_records)` writes `alert_records` (key = alert_id, value = the
  alert as JSON, alert.COLUMNS) or `dead_letter_records` (the record's key and line unchanged, why
  and where from in the headers).
- Alert sinks are chosen by name on the analyzer's command line (`--alert-sink NAME[=ARG]`,
  repeatable): ALERT_SINKS holds their factories, `@alert_sink(name, help)` adds one, and
  `fan_out` calls the chosen ones in order.

The contract of an alert sink:
- It is called on the driver for every micro-batch of the alerts query, with the batch's alerts
  (alert.COLUMNS), which may be none: a sink that writes nothing for an empty batch checks
  `batch.isEmpty()` itself.
- Delivery is at-least-once: the batch of a run that stopped before its end is run again at the
  next start, with the same alerts (ids are deterministic): a consumer keeps one per alert_id.
- A sink that raises fails the micro-batch: the analyzer stops with exit status 1 and one line
  naming the sink, the batch is not committed, and the next start runs it again into every sink.
  A sink whose failure must not stop alerting (a best-effort notifier) catches its own errors.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from finale.common import alert

# A batch function: (micro-batch DataFrame, batch id) -> None, as foreachBatch calls it.
BatchSink = Callable[[DataFrame, int], None]


def alert_records(alerts_batch: DataFrame) -> DataFrame:
    """Alerts -> Kafka records: key = alert_id, value = the alert (alert.COLUMNS) as JSON."""
    return alerts_batch.select(
        F.col("alert_id").alias("key"),
        F.to_json(F.struct(*alert.COLUMNS)).alias("value"),
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
    """A foreachBatch sink writing `to_records(batch)` (key/value/headers columns) to a Kafka
    topic, acknowledged by every in-sync replica and idempotent (the Kafka client's defaults,
    said here: on a replicated cluster a written alert survives its broker, and a retried batch
    is not written twice)."""
    def write(batch: DataFrame, batch_id: int) -> None:
        (to_records(batch).write.format("kafka")
         .option("kafka.bootstrap.servers", bootstrap_servers)
         .option("kafka.acks", "all")
         .option("kafka.enable.idempotence", "true")
         .option("topic", topic)
         .save())
    return write


@dataclass(frozen=True)
class SinkContext:
    """What an alert sink's factory may need from the analyzer's command line."""
    bootstrap_servers: str
    alerts_topic: str


# name -> (factory(arg, context) -> BatchSink, help); `--alert-sink NAME[=ARG]` picks them.
ALERT_SINKS: dict[str, tuple[Callable[[str | None, SinkContext], BatchSink], str]] = {}


def alert_sink(name: str, help: str):
    """Decorator: register `factory(arg, context) -> BatchSink` as the alert sink `name`."""
    def add(factory):
        if name in ALERT_SINKS:
            raise ValueError(f"alert sink {name!r} is already registered")
        ALERT_SINKS[name] = (factory, help)
        return factory
    return add


class SinkError(RuntimeError):
    """A sink failed: the message names it (the analyzer's one-line error)."""


def fan_out(sinks: dict[str, BatchSink]) -> BatchSink:
    """One foreachBatch function calling every sink of `sinks` (label -> sink) in order; the first
    failure stops the batch as SinkError naming the sink (module docstring)."""
    def write(batch: DataFrame, batch_id: int) -> None:
        for label, sink in sinks.items():
            try:
                sink(batch, batch_id)
            except Exception as error:
                first = (str(error).strip().splitlines() or [type(error).__name__])[0]
                raise SinkError(f"alert sink {label} failed on batch {batch_id}: "
                                f"{first}") from error
    return write


def alert_sinks(specs: list[str], context: SinkContext) -> BatchSink:
    """The sink of `--alert-sink` specs ("kafka", "NAME=ARG"); ValueError naming a bad one."""
    chosen = {}
    for spec in specs:
        name, _, arg = spec.partition("=")
        if name not in ALERT_SINKS:
            raise ValueError(f"unknown alert sink {name!r} (known: {', '.join(ALERT_SINKS)})")
        factory, _ = ALERT_SINKS[name]
        chosen[spec] = factory(arg or None, context)
    return fan_out(chosen)


@alert_sink("kafka", "the alerts topic (--alerts-topic on --bootstrap-servers); the default")
def kafka_alerts(arg: str | None, context: SinkContext) -> BatchSink:
    return kafka_sink(context.bootstrap_servers, arg or context.alerts_topic, alert_records)
