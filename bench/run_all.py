"""`make bench`: every benchmark of bench/, one after the other, into bench/RESULTS.md.

Run:
    python bench/run_all.py [--full] [--only NAME,...] [--bootstrap-servers HOST:PORT]

Starts a private Kafka broker (finale/local_kafka.py, on a free port, state in .state/bench-kafka)
unless --bootstrap-servers names one, runs each benchmark script in a subprocess with the sizes
below (--full: the issue's 1,000,000 lines where a script takes a line count; the results file's
header says how long a run took), and writes bench/RESULTS.md: the date, the machine (cores, load
average before and after the whole run and around each benchmark), then each script's command,
duration and output. Every script prints its figures with the baseline or ceiling it measured in
the same run and the ratio. The sections of the earlier results file that no benchmark writes
(hand-written: "Rejected prototypes", "Runs recorded by hand" and the ones after it) are kept,
after the benchmarks' own. A script's stderr goes to .state/bench/<name>.log. The broker started
here is stopped at the end.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
LOGS = ROOT / ".state" / "bench"
RESULTS = BENCH / "RESULTS.md"

# name -> (script, flags, flags under --full, needs a broker). Markdown: the script prints a table.
BENCHMARKS = {
    "parser": ("bench_parser.py", ["--lines", "200000", "--repeat", "2"],
               ["--lines", "1000000", "--repeat", "3"], False),
    "parser-parts": ("bench_parser_parts.py", ["--lines", "200000", "--repeat", "3"],
                     ["--lines", "1000000", "--repeat", "3"], False),
    "generator-complet": ("bench_generator.py", ["--seconds", "2", "--unpaced-lines", "300000"],
                          [], False),
    "generator-finale": ("bench_finale_generator.py", ["--lines", "100000", "--repeat", "1"],
                         ["--lines", "1000000", "--repeat", "2"], True),
    "pipeline": ("bench_finale_pipeline.py", ["--lines", "200000"], ["--lines", "1000000"], True),
    "analyzer-throughput": ("bench_finale_analyzer.py", ["throughput", "--lines", "200000"],
                            ["throughput", "--lines", "1000000"], True),
    "analyzer-latency": ("bench_finale_analyzer.py",
                         ["latency", "--rate", "1000", "--duration", "90"],
                         ["latency", "--rate", "1000", "--duration", "240"], True),
    # The analyzer before (git revision bench_finale_catchup.BEFORE) and after, at the issue's
    # size in both modes: the ceiling, uncapped, the default cap, an outage's backlog, latency.
    "catch-up": ("bench_finale_catchup.py", ["--lines", "1000000", "--caps", "100000"],
                 ["--lines", "1000000", "--caps", "100000,400000"], True),
    "batch-cost": ("bench_finale_batch_cost.py", ["--lines", "30000", "--per-batch", "1500"],
                   [], True),
    # An incident every 2 s, 8 s each: enough alerts in a 90 s run at 1,000 lines/s for a p99
    # (the counts: bench/RESULTS.md, "latency").
    "latency": ("bench_finale_latency.py", ["--rates", "1000,10000",
                                            "--triggers", "1 second,0 seconds,5 seconds",
                                            "--duration", "90", "--incident-every", "2"],
                ["--rates", "1000,10000",
                 "--triggers", "1 second,0 seconds,500 milliseconds,5 seconds",
                 "--duration", "180", "--incident-every", "2"], True),
    # Three pipeline-bench runs (local[1], local[2], a 2-worker standalone cluster). Each one's
    # pre-load, Spark start and warm-up dominate its run time, so fewer lines would save little
    # time: the larger size, for steadier steady states (run times: bench/RESULTS.md, "scaling").
    "scaling": ("bench_finale_scaling.py", ["--lines", "100000"], ["--lines", "1000000"], True),
}
MARKDOWN = {"parser-parts", "pipeline", "catch-up", "batch-cost", "latency", "scaling"}


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def merge_partial(earlier: str, header: str,
                  sections: dict[str, str]) -> tuple[str, dict[str, str]]:
    """A partial run (--only) into an existing results file: its sections replace theirs, the
    others stay with their own commands and loads, and the earlier header stays on top with a line
    saying what this run replaced (its own header line, turned into that sentence)."""
    head, *parts = earlier.split("\n## ")
    kept = {part.split("\n", 1)[0].strip(): "## " + part.rstrip() + "\n" for part in parts}
    merged = {**{n: kept[n] for n in BENCHMARKS if n in kept}, **sections}
    run_line = header.split("\n\n", 1)[1].split(". The machine is shared")[0]
    header = (head.rstrip("\n") + f"\n\nThen {run_line}; it replaced the section(s) "
              f"{', '.join(sections)}.\n")
    return header, {n: merged[n] for n in BENCHMARKS if n in merged}


def kept_sections(earlier: str) -> list[str]:
    """The sections of an earlier results file that no benchmark writes (hand-written ones, such
    as "Rejected prototypes": figures of cases since removed, of runs made outside make bench),
    to carry over to the new file, in their order."""
    _, *parts = earlier.split("\n## ")
    return ["## " + part.rstrip() + "\n" for part in parts
            if part.split("\n", 1)[0].strip() not in BENCHMARKS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--full", action="store_true",
                        help="the issue's sizes (1,000,000 lines); takes about an hour here")
    parser.add_argument("--only", default="",
                        help="comma-separated benchmarks to run (default all): "
                             + ", ".join(BENCHMARKS))
    parser.add_argument("--bootstrap-servers", default=None,
                        help="use this Kafka cluster instead of starting a private broker")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results file (markdown)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")

    from finale.tools import local_kafka

    LOGS.mkdir(parents=True, exist_ok=True)
    started_broker = None
    bootstrap = args.bootstrap_servers
    if bootstrap is None and any(BENCHMARKS[n][3] for n in names):
        state_dir = (ROOT / ".state" / "bench-kafka").resolve()
        info = local_kafka.broker_info(state_dir)  # a broker left running here is reused
        if info is None:
            try:
                info, _ = local_kafka.start(port=local_kafka._free_port(), state_dir=state_dir,
                                            log=lambda message: print(message, flush=True))
            except local_kafka.KafkaSetupError as error:
                print(f"error: {error}", file=sys.stderr)
                return 1
            started_broker = state_dir
        bootstrap = info["bootstrap_servers"]

    began_all, load_before = time.monotonic(), load()
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = {}
    failed = []
    try:
        for name in names:
            script, flags, full_flags, needs_broker = BENCHMARKS[name]
            flags = list(full_flags if args.full and full_flags else flags)
            if needs_broker:
                flags += ["--bootstrap-servers", bootstrap]
            command = [sys.executable, str(BENCH / script), *flags]
            shown = " ".join(["python", f"bench/{script}",
                              *(f'"{f}"' if " " in f else f for f in flags)])
            print(f"== {name}: {shown}", flush=True)
            before, began = load(), time.monotonic()
            with open(LOGS / f"{name}.log", "w") as errors:
                result = subprocess.run(command, stdout=subprocess.PIPE, stderr=errors, text=True,
                                        cwd=ROOT)
            seconds = time.monotonic() - began
            output = result.stdout.rstrip()
            print(output, flush=True)
            status = "" if result.returncode == 0 else f", exit status {result.returncode}"
            if result.returncode != 0:
                failed.append(name)
            body = output if name in MARKDOWN else f"```\n{output}\n```"
            sections[name] = (f"## {name}\n\n`{shown}` ({seconds:.0f} s{status}; load average "
                            f"1/5/15 min {before} before, {load()} after)\n\n{body}\n")
    except KeyboardInterrupt:
        return 130
    finally:
        if started_broker is not None:
            local_kafka.stop(state_dir=started_broker,
                             log=lambda message: print(message, flush=True))
    total = time.monotonic() - began_all
    flags = " ".join(["--full"] * args.full + [f"--only {','.join(names)}"] * bool(args.only))
    command = f"make bench BENCH_ARGS='{flags}'" if flags else "make bench"
    header = (f"# Benchmark results\n\n`{command}` on "
              f"{stamp}: {os.cpu_count()} CPU cores ({platform.machine()}, {platform.system()} "
              f"{platform.release()}), Python {platform.python_version()}; load average 1/5/15 min "
              f"{load_before} before, {load()} after; {total / 60:.1f} min in all. The machine is "
              "shared: compare each figure with the baseline measured in the same run (the "
              "ratios), not absolute figures across runs.\n")
    earlier = args.output.read_text() if args.output.exists() else ""
    if args.only and earlier:
        header, sections = merge_partial(earlier, header, sections)
    args.output.write_text(header + "\n" + "\n".join([*sections.values(),
                                                       *kept_sections(earlier)]))
    print(f"wrote {args.output} ({total / 60:.1f} min)")
    if failed:
        print(f"error: benchmark(s) failed: {', '.join(failed)} (see .state/bench/<name>.log)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
