"""Final-stage log generator: the stage-2 sock shop, written to Kafka, with injected incidents.

Run:
  python finale/log_generator.py                 # Kafka localhost:9092, topic http-logs, 10 lines/s
  python finale/log_generator.py --rate 200 --incident ip@30+20 --incident url=/cart@60+15 \
      --incident global@90+10 --truth .state/finale/truth.jsonl
  python finale/log_generator.py --output - --count 5 --seed 1 --start-time 2026-11-28T09:00:00Z
  python finale/log_generator.py --history 24 --rate 20 --output .state/finale/history.log
  python finale/log_generator.py --replay access.log --speed 10      # real logs, 10x their pace

Every line is in the Apache "combined" format (the only place this template is written down):
  %h %l %u [%t] "%r" %>s %b "%{Referer}i" "%{User-agent}i"
  203.0.113.7 - - [28/Nov/2026:09:14:03 +0000] "GET /socks/wool HTTP/1.1" 404 512 "-" "Mozilla/5.0"
with the log time in UTC; line i carries the log time start + i/rate (to the second).

Traffic model: --users users, each one client IP with its own user agent, visit the shop's URLs.
Error model, exactly: the error users are a seeded sample of round(PU/100*users) users, the error
URLs a seeded sample of round(PL/100*len(URLS)) URLs; a request fails (4xx/5xx: 404, 500, 503, 403,
502, ...) with probability PE/100 if and only if its user is an error user AND its URL an error
URL; every other request succeeds (2xx/3xx).

Incidents (--incident KIND[=ENTITY]@START+DURATION, repeatable; START and DURATION in seconds of
log time from line 0): while log time is in [start + START, start + START + DURATION), every
request of that IP (ip), of that URL (url) or every request (global) fails with probability
--incident-error-rate/100 (default 90 %, same 4xx/5xx mix), or with its error-pair probability
if that is higher; a surge (surge[=IP]) makes that IP send SURGE_MULTIPLIER (10) x its normal
share of the lines, all successful (lines of other users reassigned to it: the line rate, hence
the global volume, is unchanged). The incident uses the same per-line draw as the error model, so
outside the incident windows the lines are byte-identical to a run without incidents. ENTITY
defaults to a seeded random pick (a different one for each incident of a kind when possible).
--truth FILE writes one JSON line per incident: {"kind", "entity", "start", "end"} (ISO 8601 UTC
log time).

Output, one of:
- Kafka (default): topic --topic of --bootstrap-servers, key = client IP, value = the line
  (no newline); producer tuned for throughput (acks=1, 512 KiB batches, linger 20 ms,
  --compression); delivery failures are reported and make the exit status 1; flushed on exit,
  Ctrl-C or SIGTERM. --kafka-client confluent-kafka: the same records, partitions and counts
  with librdkafka (optional package, less CPU per line: measured in bench/RESULTS.md;
  finale/generator/outputs.py).
- --output FILE or - (stdout).
- --host/--port given: the stage-2 TCP server, every line broadcast to every connected client
  (finale/generator/server.py).
Lines are written in batches when due (line i at t0 + i/rate of wall time). --history HOURS writes
HOURS of log time (round(HOURS*3600*rate) lines, ending now unless --start-time) as fast as
possible to --output, for the threshold job. --replay FILE sends an existing access log as it is,
at --rate lines/s or, with --speed X, at X times the pace of its own timestamps; --incident and
--truth work with it too (times from the log's first timestamp, incident lines added to the real
ones, which stay unchanged and in their order: finale/generator/replay.py).

Reproducibility: line i is a pure function of (--seed, the model options, --rate, --start-time,
the incidents, i): the same options give byte-identical lines whatever the output or the pace.
This module is the command line (parser, checks, main(argv)); the lines come from
finale/generator/traffic.py: build_traffic_model(...) -> TrafficModel, LogStream(...).lines(i, j).
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import random
import signal
import socket
import sys
import threading
import time
from datetime import datetime, timezone

from finale.common.cli import BOOTSTRAP_HELP, DEFAULT_BOOTSTRAP, OneLineErrorParser
from finale.generator.incidents import incident_spec, resolve_incidents, write_truth
from finale.generator.outputs import (
    ACKS_CHOICES,
    COMPRESSIONS,
    CONFLUENT_MISSING,
    KAFKA_CLIENTS,
    KafkaSinkError,
    log,
    open_kafka,
    open_output,
    topic_name,
    write_stats,
)
from finale.generator.replay import run_replay
from finale.generator.server import Broadcaster, serve
from finale.generator.shop import URLS
from finale.generator.traffic import LogStream, Pacer, build_traffic_model, write_paced


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None ones: their help says what happens instead."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def percent(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be a percentage between 0 and 100, got {text!r}")
    return value


def at_least(minimum: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value
    parse.__name__ = "integer"  # argparse names the type in its "invalid ... value" message
    return parse


def iso_time(text: str) -> float:
    """ISO 8601 date-time to epoch seconds; without an offset it is taken as UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an ISO 8601 date-time such as 2026-11-28T09:00:00Z, got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def port_number(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 0 and 65535, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        description="Generate Apache combined access logs of a sock shop, with a controlled "
                    "error model and injected incidents, to Kafka (default), a file or a TCP "
                    "socket.",
        epilog="Error model: error users = a seeded sample of round(PU/100*users) users, error "
               f"URLs = a seeded sample of round(PL/100*URLs) of the shop's {len(URLS)} URLs; a "
               "request fails (404, 500, 503, 403, 502, 400, 429, 504) with probability PE/100 "
               "iff its user is an error user and its URL an error URL; all other requests get "
               "2xx/3xx. Same --seed and options -> byte-identical lines.",
        formatter_class=DefaultsFormatter)
    parser.add_argument("--rate", type=positive_float, default=10.0,
                        help="lines per second, of log time and of writing (> 0; 1e12 = unpaced)")
    parser.add_argument("--users", type=at_least(1), default=50,
                        help="number of users, each one IP with one user agent (>= 1)")
    parser.add_argument("--error-users", type=percent, default=20.0, metavar="PU",
                        help="%% of the users that are error users (0..100)")
    parser.add_argument("--error-rate", type=percent, default=50.0, metavar="PE",
                        help="%% of the requests that fail on an (error user, error URL) pair "
                             "(0..100)")
    parser.add_argument("--error-urls", type=percent, default=30.0, metavar="PL",
                        help="%% of the shop's URLs that are error URLs (0..100)")
    parser.add_argument("--seed", type=int, default=None,
                        help="random seed; default: a random one, printed on stderr")
    parser.add_argument("--start-time", type=iso_time, default=None, metavar="ISO8601",
                        help="log time of line 0, e.g. 2026-11-28T09:00:00Z (default: now, UTC)")
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--count", type=at_least(0), default=None,
                      help="stop after this many lines (default: never)")
    stop.add_argument("--duration", type=positive_float, default=None, metavar="SECONDS",
                      help="stop after this many seconds, i.e. round(rate*SECONDS) lines "
                           "(default: never)")
    parser.add_argument("--output", default=None, metavar="FILE",
                        help="write to FILE ('-' = stdout) instead of Kafka (default: Kafka)")
    parser.set_defaults(serve_tcp=False)
    parser.add_argument("--host", default="localhost", action=ServeTcp,
                        help="serve TCP clients on this interface instead of Kafka (stage 2's "
                             "broadcast server, used only when --host or --port is given)")
    parser.add_argument("--port", type=port_number, default=9999, action=ServeTcp,
                        help="TCP port of that server")
    kafka = parser.add_argument_group("Kafka output (the default)")
    kafka.add_argument("--bootstrap-servers", default=DEFAULT_BOOTSTRAP, help=BOOTSTRAP_HELP)
    kafka.add_argument("--topic", type=topic_name, default="http-logs",
                       help="topic the lines go to, key = client IP")
    kafka.add_argument("--compression", choices=COMPRESSIONS, default="gzip",
                       help="producer compression (with kafka-python, lz4, snappy and zstd need "
                            "their Python package)")
    kafka.add_argument("--acks", choices=ACKS_CHOICES, default="1",
                       help="1: the partition leader's acknowledgement (throughput); all: every "
                            "in-sync replica's, with idempotence (a replicated cluster: no line "
                            "lost with a broker, none written twice by a retry)")
    kafka.add_argument("--kafka-client", choices=KAFKA_CLIENTS, default="kafka-python",
                       help="producer library: the same records, partitions and counts; "
                            "confluent-kafka (librdkafka, pip install -e '.[bench]') "
                            "uses less CPU per line")
    incidents = parser.add_argument_group("incidents")
    incidents.add_argument("--incident", type=incident_spec, action="append", default=None,
                           metavar="KIND[=ENTITY]@START+DURATION",
                           help="KIND ip|url|global|surge: from START for DURATION seconds of "
                                "log time after line 0, that IP / URL / all traffic mostly fails, "
                                "or (surge) that IP sends 10x its requests, all successful; ENTITY "
                                "default: a seeded random pick; repeatable (e.g. ip@30+20, "
                                "url=/cart@60+15, global@90+10)")
    incidents.add_argument("--incident-error-rate", type=percent, default=90.0, metavar="PI",
                           help="%% of the requests that fail during an incident (0..100)")
    incidents.add_argument("--incident-rate", type=positive_float, default=None, metavar="R",
                           help="with --replay: lines per second of log time each incident adds "
                                "(default 2; see finale/generator/replay.py)")
    incidents.add_argument("--truth", default=None, metavar="FILE",
                           help="write each incident as a JSON line: kind, entity, start, end "
                                "(ISO 8601 UTC log time)")
    parser.add_argument("--stats-file", default=None, metavar="FILE",
                        help="at the end, write the run's counts as JSON (Kafka: lines_sent, "
                             "lines_delivered, lines_acknowledged (by the broker), lines_failed, "
                             "lines_unknown (no answer before close); file: lines_written); "
                             "not with the TCP server")
    modes = parser.add_argument_group("other modes")
    modes.add_argument("--history", type=positive_float, default=None, metavar="HOURS",
                       help="write HOURS of log time, round(HOURS*3600*rate) lines, as fast as "
                            "possible to --output (start: --start-time, default now - HOURS)")
    modes.add_argument("--replay", default=None, metavar="FILE",
                       help="send the lines of an existing access log (.gz too) unchanged, at "
                            "--rate lines/s; with --incident, START counts from its first "
                            "timestamp and each incident adds its own lines (--incident-rate)")
    modes.add_argument("--speed", type=positive_float, default=None, metavar="X",
                       help="with --replay: at X times the pace of the log's own timestamps")
    return parser


class ServeTcp(argparse.Action):
    """--host / --port: store the value and switch the output to the TCP server."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.serve_tcp = True


def check_combinations(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.history is not None:
        if args.output is None:
            parser.error("argument --history: needs --output FILE or --output -")
        if args.count is not None or args.duration is not None:
            parser.error("argument --history: HOURS sets the number of lines, "
                         "drop --count/--duration")
    if args.replay is not None:
        for flag, value in (("--history", args.history), ("--duration", args.duration)):
            if value is not None:
                parser.error(f"argument --replay: cannot be combined with {flag}")
        if not os.path.isfile(args.replay) or not os.access(args.replay, os.R_OK):
            parser.error(f"argument --replay: cannot read {args.replay!r}")
    if args.speed is not None and args.replay is None:
        parser.error("argument --speed: only with --replay")
    if args.incident_rate is not None and args.replay is None:
        parser.error("argument --incident-rate: only with --replay (generated incidents fail "
                     "the generated traffic)")
    if args.replay is not None and args.incident_rate is None:
        args.incident_rate = 2.0
    if args.serve_tcp and (args.output is not None or args.replay is not None):
        parser.error("argument --host/--port: the TCP server cannot be combined with --output "
                     "or --replay")
    if args.serve_tcp and args.stats_file is not None:
        parser.error("argument --stats-file: not with the TCP server (--host/--port)")
    to_kafka = args.output is None and not args.serve_tcp
    if to_kafka and args.kafka_client == "confluent-kafka":
        try:
            import confluent_kafka  # noqa: F401  (optional: pyproject.toml's bench and dev extras)
        except ImportError:
            parser.error(f"argument --kafka-client: {CONFLUENT_MISSING}")
    if args.compression not in ("gzip", "none") and args.kafka_client == "kafka-python":
        from kafka import codec
        if not getattr(codec, f"has_{args.compression}")():
            parser.error(f"argument --compression: {args.compression} needs its Python package, "
                         "which is not installed (gzip and none always work)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.incident = args.incident or []
    check_combinations(parser, args)
    # kafka-python logs connection retries as warnings; failures are reported here in one line.
    kafka_logger = logging.getLogger("kafka")
    kafka_logger.addHandler(logging.NullHandler())
    kafka_logger.propagate = False
    # `kill` (SIGTERM) stops it as cleanly as Ctrl-C; signal handlers only exist in the main thread.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_sigterm = (signal.signal(signal.SIGTERM, signal.default_int_handler)
                        if in_main_thread else None)
    try:
        if args.replay is not None:
            return run_replay(args)
        seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
        if args.history is not None:
            total = round(args.history * 3600 * args.rate)
            start = (args.start_time if args.start_time is not None
                     else time.time() - args.history * 3600)
        else:
            total = args.count if args.duration is None else round(args.rate * args.duration)
            start = args.start_time if args.start_time is not None else time.time()
        model = build_traffic_model(args.users, args.error_users, args.error_urls, seed)
        incidents = resolve_incidents(parser, args.incident, model, seed)
        problem = None if args.truth is None else write_truth(args.truth, incidents, start)
        if problem is not None:
            log(problem)
            return 1
        stream = LogStream(model, args.error_rate, args.rate, start, seed, incidents,
                           args.incident_error_rate)
        if args.output is not None:
            return _run_to_file(args, seed, stream, total)
        if args.serve_tcp:
            return _run_server(args, seed, stream, total)
        return _run_kafka(args, seed, stream, total)
    except KeyboardInterrupt:
        return 0
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


def _run_kafka(args, seed: int, stream: LogStream, total: int | None) -> int:
    sink = open_kafka(args)
    if sink is None:
        return 1
    log(f"sending to topic {args.topic} at {args.bootstrap_servers}, {args.rate:g} lines/s"
        + (f", seed {seed}" if args.seed is None else ""))
    failed = False
    try:
        write_paced(stream, Pacer(args.rate, total), sink)
    except KeyboardInterrupt:
        pass  # what was sent so far still gets delivered below
    except KafkaSinkError as error:  # e.g. the broker went away and the send buffer stayed full
        log(f"error: Kafka at {args.bootstrap_servers}: {error}")
        failed = True
    finally:
        delivered = sink.close()
        write_stats(args.stats_file, sink.stats())
    return 0 if delivered and not failed else 1


def _run_to_file(args, seed: int, stream: LogStream, total: int | None) -> int:
    if args.seed is None:
        log(f"seed {seed}")
    out = open_output(args.output)
    if out is None:
        return 1
    try:
        written = write_paced(stream, Pacer(args.rate, total, paced=args.history is None), out)
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): that ends the output, it is not an error.
        # Point stdout at devnull so the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    write_stats(args.stats_file, {"output": args.output, "lines_written": written})
    return 0


def _run_server(args, seed: int, stream: LogStream, total: int | None) -> int:
    try:
        server = socket.create_server((args.host, args.port))
    except OSError as error:
        log(f"error: cannot listen on {args.host}:{args.port}: {error.strerror or error}")
        return 1
    server.setblocking(False)
    host, port = server.getsockname()[:2]
    log(f"listening on {host}:{port}, {args.rate:g} lines/s, seed {seed}")
    broadcaster = Broadcaster(server)
    try:
        serve(stream, Pacer(args.rate, total), broadcaster)
    finally:
        broadcaster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
