"""``python -m bench NAME|scale|all [--count N] [--repeat K] [--events E] [--json]
[--markdown PATH] [--database-url URL]``.

Runs the named benchmark (or every one) ``--repeat`` times and prints, per benchmark, the
median of our figure, the median of raw psycopg's figure measured in the same runs, and
the median of the runs' ratios: one line ``<name>: <n>/s  raw: <n>/s  ratio: <r>``, or
with ``--json`` one JSON object ``{"name", "value", "raw", "ratio", "unit"}`` per line.
Some add figures after the ratio (``bus``: latencies) or a line per variant (``bus-2w``):
see ``bench.report``. ``scale`` (run once, after the others with ``all``) stores
``--events`` events and rebuilds the projections from them: see ``bench.scale``.
``--markdown`` also writes the figures, the targets and the machine to a file (``make
bench`` writes bench/results.md): see ``bench.markdown``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from eventsourcing.persistence import OperationalError

from bench import DEFAULT_DATABASE_URL, Benchmark, Options, benchmarks, connect_kwargs, ignore
from bench import scale as scale_bench
from bench.machine import describe
from bench.markdown import document
from bench.report import Result
from commands.settings import Settings

DEFAULT_COUNT = 2000
DEFAULT_REPEAT = 5


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def parser(registry: dict[str, Benchmark]) -> argparse.ArgumentParser:
    listing = "\n".join(f"  {b.name:<12} {b.summary}" for b in registry.values())
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Measures our figures next to raw psycopg doing equivalent work, in the same run,\n"
            "on PostgreSQL; each repetition works in a fresh schema, dropped afterwards.\n"
            "Prints per benchmark '<name>: <n>/s  raw: <n>/s  ratio: <r>' (or with --json\n"
            '{"name", "value", "raw", "ratio", "unit"}): the medians over the repetitions,\n'
            "and the median of the repetitions' ratios ours / raw."
        ),
        epilog=(
            f"benchmarks:\n{listing}\n"
            f"  {'scale':<12} store --events events, rebuild the projections: time per event "
            "and memory as they grow (once)\n"
            f"  {'all':<12} every benchmark above, in turn, then scale"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", choices=[*registry, "scale", "all"], help="the benchmark to run, or all")
    p.add_argument(
        "--count",
        type=positive_int,
        default=DEFAULT_COUNT,
        help=f"operations timed per repetition and side (default {DEFAULT_COUNT})",
    )
    p.add_argument(
        "--repeat",
        type=positive_int,
        default=DEFAULT_REPEAT,
        help=f"repetitions; the medians are reported (default {DEFAULT_REPEAT})",
    )
    p.add_argument(
        "--database-url",
        default=os.environ.get("SUBLEDGER_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="PostgreSQL server to measure on (default $SUBLEDGER_BENCH_DATABASE_URL or "
        f"{DEFAULT_DATABASE_URL}); a ?schema= in it is ignored",
    )
    p.add_argument(
        "--events",
        type=positive_int,
        default=scale_bench.DEFAULT_EVENTS,
        help=f"events stored by scale (default {scale_bench.DEFAULT_EVENTS:,})",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per benchmark")
    p.add_argument(
        "--markdown",
        type=Path,
        metavar="PATH",
        help="also write the results, their targets and the machine to PATH",
    )
    p.add_argument("--verbose", action="store_true", help="each repetition's figures, on stderr")
    return p


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(benchmark: Benchmark, options: Options, repeat: int) -> Result:
    samples = []
    for i in range(repeat):
        sample = benchmark.measure(options)
        result = Result.from_samples(benchmark.name, benchmark.unit, [sample])
        for line in result.line().splitlines():
            options.log(f"#{i + 1} {line}")
        samples.append(sample)
    return Result.from_samples(benchmark.name, benchmark.unit, samples)


def main(argv: Sequence[str] | None = None) -> int:
    registry = benchmarks()
    p = parser(registry)
    args = p.parse_args(argv)
    try:
        kwargs = connect_kwargs(args.database_url)
    except ValueError as error:
        p.error(str(error))
    options = Options(args.count, args.database_url, log if args.verbose else ignore)
    started = datetime.now(UTC)
    selected = [b for b in registry.values() if args.name in (b.name, "all")]
    results: list[Result] = []
    scale = None
    try:
        for benchmark in selected:
            results.append(run(benchmark, options, args.repeat))
            print(results[-1].json() if args.json else results[-1].line(), flush=True)
        if args.name in ("scale", "all"):
            scale = scale_bench.measure(args.database_url, args.events, options.log)
            print(scale.json() if args.json else scale.line(), flush=True)
    except (psycopg.OperationalError, OperationalError) as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    finally:
        if args.markdown is not None and (results or scale):
            machine = describe(kwargs, Settings().redis_url, started)
            command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
            args.markdown.write_text(document(machine, command, args.repeat, results, scale))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
