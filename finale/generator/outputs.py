"""Where the log generator's lines go, besides a file or stdout: Kafka, one record per line.

The Kafka sinks have the interface write_paced and replay write to (write(bytes), flush(),
close()), like a binary file, and the same semantics whatever the client (--kafka-client): KafkaSink
with kafka-python (the default, the runtime requirement), ConfluentKafkaSink with confluent-kafka
(librdkafka: less CPU per line, measured in bench/RESULTS.md; optional, in the bench and dev extras
of pyproject.toml). open_kafka / open_output turn a failure to open into one line on stderr and
None. write_stats is --stats-file: what a run wrote and delivered, for scripts (the demo) to read.
"""
from __future__ import annotations

import argparse
import string
import sys
import time
from datetime import datetime, timezone

from finale.common.cli import write_json_atomically

# Codecs either client can use here: gzip is in the standard library; with kafka-python, lz4,
# snappy and zstd need extra packages (lz4, python-snappy, zstandard) that the project's
# dependencies (pyproject.toml) do not install; confluent-kafka's librdkafka has all four built in.
COMPRESSIONS = ("gzip", "none", "lz4", "snappy", "zstd")
KAFKA_CLIENTS = ("kafka-python", "confluent-kafka")
CONFLUENT_MISSING = ("confluent-kafka is not installed: pip install -e '.[bench]' "
                     "(make setup installs it with the dev extra)")

# The producer settings both clients share. Throughput over durability by default: the leader's ack
# is enough for generated traffic; big batches, filled for up to 20 ms. --acks all (a replicated
# cluster) waits for every in-sync replica and turns idempotence on: a retried batch is never
# written twice.
ACKS, BATCH_BYTES, LINGER_MS = 1, 512 * 1024, 20
ACKS_CHOICES = ("1", "all")
CONNECT_TIMEOUT = 5.0  # s for a broker to answer at start, else "no Kafka broker answers"
BLOCK_TIMEOUT = 15.0  # s a send may wait for metadata or for room in a full send buffer
DELIVERY_TIMEOUT_MS = 120_000  # per record, retries included (the Java client's default)
FLUSH_TIMEOUT = 30.0  # s close() waits for the broker to acknowledge what is queued
LEGAL_TOPIC_CHARACTERS = frozenset(string.ascii_letters + string.digits + "._-")


def topic_name(text: str) -> str:
    """--topic: a name Kafka accepts (1-249 of ASCII letters, digits, '.', '_', '-'; not . or ..),
    checked here so that a bad one is a usage error with either client (kafka-python would raise a
    bare ValueError from inside the producer)."""
    if not 0 < len(text) < 250 or set(text) - LEGAL_TOPIC_CHARACTERS or text in (".", ".."):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a Kafka topic name (1-249 of letters, digits, '.', '_', '-')")
    return text


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class KafkaSinkError(Exception):
    """Kafka could not be used (no broker, no topic, a send that could not be queued): its message
    is one line for the user, the same with either client."""


def no_broker(bootstrap_servers: str) -> KafkaSinkError:
    return KafkaSinkError(f"no Kafka broker answers at {bootstrap_servers} "
                          "(start one: python finale/local_kafka.py start)")


def split_records(data: bytes) -> tuple[list[bytes], list[bytes | None]]:
    """The lines of `data` (newlines dropped) and the key of each: its first field, the client IP
    (None for a line that does not start with a field followed by a space)."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines, [line[:space] if (space := line.find(b" ")) > 0 else None for line in lines]


class _Sink:
    """What both Kafka sinks share: the counts, --stats-file's view of them, the closing report.

    sent = acknowledged + failed + unknown (neither, when the producer was closed)."""

    def __init__(self, bootstrap_servers: str, topic: str):
        self.topic, self.bootstrap_servers = topic, bootstrap_servers
        self.sent = self.acknowledged = self.failed = 0
        self.delivered: int | None = None  # known once close() has flushed every line

    def _failed(self, why: str) -> None:
        self.failed += 1
        if self.failed == 1:
            log(f"error: delivery to {self.topic} failed: {why}")

    def flush(self) -> None:
        """Nothing per batch: the producer sends when a batch is full or lingered 20 ms."""

    def stats(self) -> dict:
        return {"output": "kafka", "topic": self.topic, "lines_sent": self.sent,
                "lines_delivered": self.delivered, "lines_acknowledged": self.acknowledged,
                "lines_failed": self.failed,
                # Neither acknowledged nor failed when the producer was closed (flush timed out).
                "lines_unknown": self.sent - self.acknowledged - self.failed}

    def _closed(self, flushed: bool, why: str = "") -> bool:
        """close()'s report once the producer is flushed (or gave up): True if every line was
        delivered."""
        if not flushed:
            log(f"error: lines still undelivered after {FLUSH_TIMEOUT:g} s: {why}")
            return False
        delivered = self.delivered = self.acknowledged
        log(f"{delivered} lines delivered to topic {self.topic} at {self.bootstrap_servers}"
            + (f", {self.failed} failed" if self.failed else ""))
        return self.failed == 0


class KafkaSink(_Sink):
    """Lines to a Kafka topic with kafka-python, one record per line: key = client IP, value = the
    line."""

    def __init__(self, bootstrap_servers: str, topic: str, compression: str, acks: str = "1"):
        from kafka import KafkaProducer
        from kafka.errors import KafkaError
        from kafka.partitioner.default import murmur2

        super().__init__(bootstrap_servers, topic)
        self.murmur2, self.KafkaError = murmur2, KafkaError
        try:
            self.producer = KafkaProducer(
                bootstrap_servers=bootstrap_servers.split(","),
                client_id="chaussettes-log-generator",
                acks="all" if acks == "all" else ACKS, enable_idempotence=acks == "all",
                batch_size=BATCH_BYTES, linger_ms=LINGER_MS,
                compression_type=None if compression == "none" else compression,
                delivery_timeout_ms=DELIVERY_TIMEOUT_MS,
                bootstrap_timeout_ms=int(CONNECT_TIMEOUT * 1000),
                max_block_ms=int(BLOCK_TIMEOUT * 1000))
            # Fails now (KafkaTimeoutError) rather than at the first line if the topic cannot be
            # had.
            self.partitions = sorted(self.producer.partitions_for(topic))
        except KafkaError as error:
            if "bootstrap" in str(error).lower():
                raise no_broker(bootstrap_servers) from None
            raise KafkaSinkError(f"Kafka at {bootstrap_servers}, topic {topic}: "
                                 f"{type(error).__name__}: {error}") from None
        # The partition of each IP, as the default partitioner (murmur2, like the Java client)
        # computes it, once per IP instead of once per line.
        self.partition_of: dict[bytes, int] = {}

    # The two callbacks count in the producer's I/O thread (one writer each, so plain ints are safe
    # to read from the main thread).
    def _acknowledged(self, _metadata) -> None:
        self.acknowledged += 1

    def _send_failed(self, error: Exception) -> None:
        self._failed(f"{type(error).__name__}: {error}")

    def write(self, data: bytes) -> None:
        send, topic = self.producer.send, self.topic
        failed, acked = self._send_failed, self._acknowledged
        lines, keys = split_records(data)
        partition_of, partitions = self.partition_of, self.partitions
        sent = self.sent
        try:
            for line, key in zip(lines, keys, strict=True):
                partition = partition_of.get(key) if key is not None else None
                if partition is None and key is not None:
                    partition = partition_of[key] = partitions[
                        (self.murmur2(key) & 0x7FFFFFFF) % len(partitions)]
                # Counted before send(): a Ctrl-C inside send() leaves a line that may or may not
                # be queued, which the stats then count as unknown (never as acknowledged).
                sent += 1
                send(topic, value=line, key=key, partition=partition).add_callback(
                    acked).add_errback(failed)
        except self.KafkaError as error:  # e.g. the broker went away and the buffer stayed full
            sent -= 1  # that line was not queued
            raise KafkaSinkError(f"{type(error).__name__}: {error}") from None
        finally:
            self.sent = sent

    def close(self) -> bool:
        """Deliver what is queued; True if every line was delivered."""
        try:
            self.producer.flush(timeout=FLUSH_TIMEOUT)
        except self.KafkaError as error:
            return self._closed(False, f"{type(error).__name__}: {error}")
        finally:
            self.producer.close(timeout=10)
        return self._closed(True)


class ConfluentKafkaSink(_Sink):
    """KafkaSink's records, settings and counts with confluent-kafka (librdkafka, in C).

    What makes it cheaper per line: librdkafka partitions (murmur2_random: the Java client's
    murmur2 of the key, so the same partition as KafkaSink) and batches in C, and reports only
    failed deliveries (delivery.report.only.error): a line that is no longer queued and did not
    fail was acknowledged, so acknowledged = sent - failed - still queued, without a Python
    callback per line.
    """

    def __init__(self, bootstrap_servers: str, topic: str, compression: str, acks: str = "1"):
        from confluent_kafka import KafkaException, Producer

        super().__init__(bootstrap_servers, topic)
        self.KafkaException = KafkaException
        self.last_error = None  # the client's latest error (e.g. all brokers down), for messages
        self.counting = True  # False once close() has counted: later reports change nothing
        self.producer = Producer({
            "bootstrap.servers": bootstrap_servers, "client.id": "chaussettes-log-generator",
            "acks": "all" if acks == "all" else ACKS, "enable.idempotence": acks == "all",
            "batch.size": BATCH_BYTES,
            "linger.ms": LINGER_MS, "compression.type": compression,
            "partitioner": "murmur2_random", "delivery.timeout.ms": DELIVERY_TIMEOUT_MS,
            "delivery.report.only.error": True, "on_delivery": self._delivery_failed,
            # Connection retries are the client's business (as kafka-python's logger, silenced in
            # log_generator.py); errors reach the user through the reports below, in one line.
            "error_cb": self._error, "log_level": 0})
        self._wait_for_topic()

    def _wait_for_topic(self) -> None:
        """Fail now rather than at the first line: no broker within CONNECT_TIMEOUT, or no
        partitions for the topic within BLOCK_TIMEOUT (a broker that auto-creates topics, as
        kafka-python's producer lets it, creates it here)."""
        deadline = time.monotonic() + BLOCK_TIMEOUT
        timeout = CONNECT_TIMEOUT
        while True:
            try:
                metadata = self.producer.list_topics(self.topic, timeout=timeout).topics[self.topic]
            except self.KafkaException as error:
                if timeout == CONNECT_TIMEOUT:  # not a single answer yet: no broker
                    raise no_broker(self.bootstrap_servers) from None
                metadata = error.args[0]
            else:
                if metadata.error is None and metadata.partitions:
                    return
                metadata = metadata.error
            timeout = max(0.1, min(1.0, deadline - time.monotonic()))
            if time.monotonic() >= deadline:
                raise KafkaSinkError(f"Kafka at {self.bootstrap_servers}, topic {self.topic}: "
                                     f"{metadata.name()}: {metadata.str()}")
            time.sleep(0.1)

    def _error(self, error) -> None:  # runs in poll()/flush(), in this thread
        self.last_error = error

    def _delivery_failed(self, error, _message) -> None:  # runs in poll()/flush(), failures only
        if self.counting:
            self._failed(f"{error.name()}: {error.str()}")

    def write(self, data: bytes) -> None:
        produce, topic = self.producer.produce, self.topic
        lines, keys = split_records(data)
        sent = self.sent
        try:
            for line, key in zip(lines, keys, strict=True):
                # Counted before produce(), a C call that queues the line or raises: Python raises
                # KeyboardInterrupt (Ctrl-C, SIGTERM) between bytecodes, after the call returned,
                # never between this count and the call, so `sent` is exact, and so is
                # acknowledged = sent - failed - unsent at close().
                sent += 1
                try:
                    produce(topic, line, key)
                except BufferError:  # the local queue is full: let librdkafka's threads drain it
                    sent -= 1  # not queued yet; a Ctrl-C while waiting must not count it
                    self._produce_when_room(line, key)
                    sent += 1
        except self.KafkaException as error:  # e.g. a record too large for message.max.bytes
            sent -= 1  # that line was not queued (only the first produce() above raises this)
            raise KafkaSinkError(f"{error.args[0].name()}: {error.args[0].str()}") from None
        finally:
            self.sent = sent
        self.producer.poll(0)  # serves the failure reports, once per batch rather than per line

    def _produce_when_room(self, line: bytes, key: bytes | None) -> None:
        """produce() once the queue has room again; KafkaSinkError if it stays full BLOCK_TIMEOUT s
        (the broker is gone), as kafka-python's send() gives up after max_block_ms."""
        deadline = time.monotonic() + BLOCK_TIMEOUT
        while True:
            self.producer.poll(0.01)
            try:
                self.producer.produce(self.topic, line, key)
                return
            except BufferError:
                if time.monotonic() >= deadline:
                    raise KafkaSinkError(
                        f"send queue still full after {BLOCK_TIMEOUT:g} s"
                        + (f" ({self.last_error.str()})" if self.last_error else "")) from None
            except self.KafkaException as error:
                raise KafkaSinkError(f"{error.args[0].name()}: {error.args[0].str()}") from None

    def close(self) -> bool:
        """Deliver what is queued; True if every line was delivered."""
        unsent = self.producer.flush(FLUSH_TIMEOUT)
        # Every line is now acknowledged, failed (reported by flush) or still queued (unknown).
        self.acknowledged = self.sent - self.failed - unsent
        self.counting = False
        if unsent:
            # Drop what is queued: the destructor would otherwise wait for its delivery timeout.
            self.producer.purge()
            self.producer.flush(0)
            why = f"{unsent} queued" + (f" ({self.last_error.str()})" if self.last_error else "")
            return self._closed(False, why)
        return self._closed(True)


def open_kafka(args) -> KafkaSink | ConfluentKafkaSink | None:
    """The Kafka sink of --kafka-client (kafka-python without one; log_generator.py has checked
    that the client imports); None (error said) if Kafka cannot be used."""
    sink_class = ConfluentKafkaSink if args.kafka_client == "confluent-kafka" else KafkaSink
    try:
        return sink_class(args.bootstrap_servers, args.topic, args.compression, args.acks)
    except KafkaSinkError as error:
        log(f"error: {error}")
        return None


def open_output(path: str):
    """stdout's bytes for '-', else the file opened for writing; None (error said) if it cannot
    be."""
    if path == "-":
        return sys.stdout.buffer
    try:
        return open(path, "wb")
    except OSError as error:
        log(f"error: cannot write {path}: {error.strerror}")
        return None


def write_stats(path: str | None, stats: dict) -> None:
    """--stats-file: the run's counts as one JSON object, written once at the end (None:
    nothing)."""
    if path is not None:
        write_json_atomically(path, {**stats, "finished_at": datetime.now(timezone.utc).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")})
