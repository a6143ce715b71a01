"""Where the log generator's lines go, besides a file or stdout: Kafka, one record per line.

KafkaSink has the interface write_paced and replay write to (write(bytes), flush(), close()), like
a binary file. open_kafka / open_output turn a failure to open into one line on stderr and None.
write_stats is --stats-file: what a run wrote and delivered, for scripts (the demo) to read.
"""
from __future__ import annotations

import sys
from datetime import datetime, timezone

from cli import write_json_atomically

# Codecs kafka-python can use here: gzip is in the standard library; lz4, snappy and zstd need
# extra packages (lz4, python-snappy, zstandard) that requirements.txt does not install.
COMPRESSIONS = ("gzip", "none", "lz4", "snappy", "zstd")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class KafkaSink:
    """Lines to a Kafka topic, one record per line: key = client IP, value = the line."""

    def __init__(self, bootstrap_servers: str, topic: str, compression: str):
        from kafka import KafkaProducer
        from kafka.partitioner.default import murmur2

        self.murmur2 = murmur2

        self.topic, self.bootstrap_servers = topic, bootstrap_servers
        self.sent = self.failed = 0
        self.delivered: int | None = None  # known once close() has flushed every line
        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap_servers.split(","),
            client_id="chaussettes-log-generator",
            # Throughput over durability: the leader's ack is enough for generated traffic
            # (idempotence would force acks=all); big batches, filled for up to 20 ms, compressed.
            acks=1, enable_idempotence=False, batch_size=512 * 1024, linger_ms=20,
            compression_type=None if compression == "none" else compression,
            bootstrap_timeout_ms=5_000, max_block_ms=15_000)
        # Fails now (KafkaTimeoutError) rather than at the first line if the topic cannot be had.
        self.partitions = sorted(self.producer.partitions_for(topic))
        # The partition of each IP, as the default partitioner (murmur2, like the Java client)
        # computes it, once per IP instead of once per line.
        self.partition_of: dict[bytes, int] = {}

    def _failed(self, error: Exception) -> None:  # runs in the producer's I/O thread
        self.failed += 1
        if self.failed == 1:
            log(f"error: delivery to {self.topic} failed: {type(error).__name__}: {error}")

    def write(self, data: bytes) -> None:
        send, topic, failed = self.producer.send, self.topic, self._failed
        lines = data.split(b"\n")
        if lines[-1] == b"":
            lines.pop()
        partition_of = self.partition_of
        for line in lines:
            space = line.find(b" ")
            key = line[:space] if space > 0 else None
            partition = partition_of.get(key) if key is not None else None
            if partition is None and key is not None:
                partition = partition_of[key] = self.partitions[
                    (self.murmur2(key) & 0x7FFFFFFF) % len(self.partitions)]
            send(topic, value=line, key=key, partition=partition).add_errback(failed)
        self.sent += len(lines)

    def flush(self) -> None:
        """Nothing per batch: the producer sends when a batch is full or lingered 20 ms."""

    def stats(self) -> dict:
        return {"output": "kafka", "topic": self.topic, "lines_sent": self.sent,
                "lines_delivered": self.delivered, "lines_failed": self.failed}

    def close(self) -> bool:
        """Deliver what is queued; True if every line was delivered."""
        from kafka.errors import KafkaError

        flushed = True
        try:
            self.producer.flush(timeout=30)
        except KafkaError as error:
            log(f"error: lines still undelivered after 30 s: {type(error).__name__}: {error}")
            flushed = False
        finally:
            self.producer.close(timeout=10)
        if not flushed:
            return False
        delivered = self.delivered = self.sent - self.failed
        log(f"{delivered} lines delivered to topic {self.topic} at {self.bootstrap_servers}"
            + (f", {self.failed} failed" if self.failed else ""))
        return self.failed == 0


def open_kafka(args) -> KafkaSink | None:
    from kafka.errors import KafkaError

    try:
        sink = KafkaSink(args.bootstrap_servers, args.topic, args.compression)
    except KafkaError as error:
        if "bootstrap" in str(error).lower():
            log(f"error: no Kafka broker answers at {args.bootstrap_servers} "
                "(start one: python finale/local_kafka.py start)")
        else:
            log(f"error: Kafka at {args.bootstrap_servers}, topic {args.topic}: "
                f"{type(error).__name__}: {error}")
        return None
    return sink


def open_output(path: str):
    """stdout's bytes for '-', else the file opened for writing; None (error said) if it cannot be."""
    if path == "-":
        return sys.stdout.buffer
    try:
        return open(path, "wb")
    except OSError as error:
        log(f"error: cannot write {path}: {error.strerror}")
        return None


def write_stats(path: str | None, stats: dict) -> None:
    """--stats-file: the run's counts as one JSON object, written once at the end (None: nothing)."""
    if path is not None:
        write_json_atomically(path, {**stats, "finished_at": datetime.now(timezone.utc).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")})
