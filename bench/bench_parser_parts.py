"""Where the parser's time goes: its parts and column pruning on the same cached lines, one run.

Run:
    python bench/bench_parser_parts.py [--lines 200000] [--repeat 3]

Lines of finale/log_generator.py (seed 1, 3 % of them made malformed: empty, truncated, a bad
date) are cached in memory on 2 partitions; each variant is written to the `noop` sink (best of
--repeat, after one untimed warm-up run) and compared with `length(value)` (the bare-read ceiling
of the issue) and with the stage parser (finale.analyzer.access_log.parse_access_log) measured in
the same run:
  length(value)          the floor: one cheap expression per line
  regex only             access_log's regexp_replace (the one-pass regex), nothing else
  regex + split          + split into the fields array
  timestamp only         try_to_timestamp(dd/MMM/yyyy:HH:mm:ss Z) of the [%t] field (cut by instr)
  stage parser           parse_access_log
  stage parser, 4 cols   parse_access_log, only the columns the counts use (ip, url, status,
                         event_time, malformed): what column pruning leaves
Each variant also checks it flags exactly the malformed lines the stage parser flags (where it
has a malformed column): a cheaper parser that loses lines is no option. A cheaper parser measured
here and rejected: bench/RESULTS.md, "Rejected prototypes".
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--lines", type=int, default=200_000, help="log lines to parse")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant (the best counts)")
    parser.add_argument("--master", default="local[2]", help="Spark master")
    args = parser.parse_args(argv)
    if args.lines < 100 or args.repeat < 1:
        parser.error("need --lines >= 100 and --repeat >= 1")

    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from finale.analyzer import access_log

    with tempfile.TemporaryDirectory() as tmp:
        log_file = Path(tmp) / "access.log"
        subprocess.run([sys.executable, str(ROOT / "finale" / "log_generator.py"), "--count",
                        str(args.lines), "--rate", "1e12", "--seed", "1", "--start-time",
                        "2026-11-28T00:00:00Z", "--output", str(log_file)], check=True,
                       stdout=subprocess.DEVNULL)
        text = log_file.read_text().splitlines()
        # Malformed lines, as the analyzer meets them: empty, cut short, impossible date.
        for i in range(0, len(text), 100):
            text[i] = ("" if i % 300 == 0 else text[i][:25] if i % 300 == 100
                       else text[i].replace("/Nov/", "/Nox/", 1))
        log_file.write_text("\n".join(text) + "\n")
        spark = (SparkSession.builder.master(args.master).appName("bench-parser-parts")
                 .config("spark.sql.shuffle.partitions", "2")
                 .config("spark.sql.session.timeZone", "UTC")
                 .config("spark.ui.enabled", "false")
                 .config("spark.ui.showConsoleProgress", "false").getOrCreate())
        spark.sparkContext.setLogLevel("ERROR")
        lines = spark.read.text(str(log_file)).repartition(2).cache()
        lines.count()
        replaced = F.regexp_replace("value", access_log.LOG_PATTERN, access_log.SEPARATOR.join(
            f"${i}" for i in range(1, len(access_log.FIELDS) + 1)))
        stamp = F.substring_index(F.substring_index("value", "[", -1), "]", 1)
        stage = access_log.parse_access_log(lines)
        variants = {
            "length(value)": lines.select(F.length("value")),
            "regex only": lines.select(replaced),
            "regex + split": lines.select(F.split(replaced, access_log.SEPARATOR)),
            "timestamp only": lines.select(
                F.try_to_timestamp(stamp, F.lit(access_log.TIME_FORMAT))),
            "stage parser": stage,
            "stage parser, 4 cols": stage.select("ip", "url", "status", "event_time", "malformed"),
        }
        expected = stage.where("malformed").count()
        stage.write.format("noop").mode("overwrite").save()  # warm-up (JIT), not timed
        best, checks = {}, {}
        for name, frame in variants.items():
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                frame.write.format("noop").mode("overwrite").save()
                times.append(time.perf_counter() - start)
            best[name] = min(times)
            if {"malformed", "value"} <= set(frame.columns):
                flagged = frame.where("malformed").count()
                checks[name] = "same malformed lines" if flagged == expected and (
                    frame.where("malformed").select("value").exceptAll(
                        stage.where("malformed").select("value")).isEmpty()) \
                    else f"MALFORMED DIFFERS: {flagged} vs {expected}"
        spark.stop()

    floor, stage_s = best["length(value)"], best["stage parser"]
    print(f"{args.lines:,} lines ({expected:,} malformed), {args.master}, best of {args.repeat}\n")
    print("| variant | rows/s | vs length(value) | vs stage parser | check |")
    print("|---|---:|---:|---:|---|")
    for name, seconds in best.items():
        print(f"| {name} | {args.lines / seconds:,.0f} | {floor / seconds:.2f}x | "
              f"{stage_s / seconds:.2f}x | {checks.get(name, '')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
