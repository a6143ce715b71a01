"""A bare Kafka producer of a file's lines: the ceiling a client library gives the generator.

Run:  python bench/bare_producer.py FILE --client kafka-python|confluent-kafka --topic T
                                     [--compression gzip|none] [--bootstrap-servers localhost:9092]

Sends every line of FILE (key = the line's first field, the IP, as the generator keys them) with the
generator's producer settings (acks=1, 512 KiB batches, linger 20 ms), then flushes: when it exits,
every line is acknowledged. bench/bench_finale_generator.py times it in a subprocess, as it times
the generator. confluent-kafka is optional (`pip install confluent-kafka==2.16.1`).
"""
from __future__ import annotations

import argparse
import os
import sys


def produce_kafka_python(lines, args) -> int:
    from kafka import KafkaProducer

    compression = None if args.compression == "none" else args.compression
    producer = KafkaProducer(bootstrap_servers=args.bootstrap_servers.split(","), acks=1,
                             enable_idempotence=False, batch_size=512 * 1024, linger_ms=20,
                             compression_type=compression)
    for line in lines:
        producer.send(args.topic, value=line, key=line[:line.find(b" ")] or None)
    producer.flush(timeout=120)
    producer.close()
    return 0


def produce_confluent(lines, args) -> int:
    from confluent_kafka import Producer

    failed = []
    # The generator's ConfluentKafkaSink settings: murmur2 partitions (kafka-python's), failed
    # deliveries reported only (no Python callback per line), one poll(0) per 65536 lines.
    producer = Producer({"bootstrap.servers": args.bootstrap_servers, "acks": 1,
                         "enable.idempotence": False, "linger.ms": 20,
                         "batch.size": 512 * 1024, "compression.type": args.compression,
                         "partitioner": "murmur2_random", "delivery.report.only.error": True,
                         "on_delivery": lambda error, _message: failed.append(error)})

    produce, poll, topic = producer.produce, producer.poll, args.topic
    for count, line in enumerate(lines, 1):
        key = line[:line.find(b" ")] or None
        while True:
            try:
                produce(topic, line, key)
                break
            except BufferError:  # local queue full: let the I/O thread drain it
                poll(0.01)
        if not count & 0xFFFF:
            poll(0)
    if producer.flush(120) or failed:
        print(f"error: {len(failed)} failed deliveries", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("file", help="lines to send, one record each")
    parser.add_argument("--client", choices=("kafka-python", "confluent-kafka"), required=True,
                        help="producer library")
    parser.add_argument("--topic", required=True, help="destination topic")
    parser.add_argument("--compression", choices=("gzip", "none"), default="gzip",
                        help="producer compression")
    parser.add_argument("--bootstrap-servers",
                        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092"),
                        help="Kafka bootstrap servers (env KAFKA_BOOTSTRAP_SERVERS)")
    args = parser.parse_args(argv)
    try:
        with open(args.file, "rb") as source:
            lines = source.read().splitlines()
    except OSError as error:
        parser.error(f"cannot read {args.file}: {error.strerror}")
    if args.client == "confluent-kafka":
        try:
            import confluent_kafka  # noqa: F401
        except ImportError:
            print("error: confluent-kafka is not installed (pip install confluent-kafka==2.16.1)",
                  file=sys.stderr)
            return 1
        return produce_confluent(lines, args)
    return produce_kafka_python(lines, args)


if __name__ == "__main__":
    sys.exit(main())
