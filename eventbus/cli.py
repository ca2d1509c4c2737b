"""The command line: ``eventbus demo | audit | replay | convert | plugins``.

This is the one place that wires the core, the plugins and the sinks together. Every error a
user can cause (a missing file, a log that is not a log, an unknown plugin or parameter, a bad
value) ends as one line on stderr and exit status 2; ``--verify`` finding a difference exits 1.
When stdout's reader goes away (``eventbus demo | head``) the command stops quietly with status
141, as a tool killed by SIGPIPE does, after closing what it was writing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from ._version import __version__
from .errors import EventBusError, UsageError

__all__ = ["UsageError", "main"]


# 128 + SIGPIPE: what a shell reports for a tool that wrote to a pipe whose reader had gone.
STDOUT_CLOSED = 141


class _StdoutClosed(BaseException):
    """stdout's reader went away (``eventbus demo | head -3``).

    A BaseException, as KeyboardInterrupt is, so that it passes through the bus's isolation of
    plugin failures (``except Exception``): a progress line printed to a closed pipe is not the
    plugin's fault, and recording it as ``plugin_failed`` (then aborting on it) would put a
    failure in the log that never happened. The run ends as an interrupted one does: the bus is
    closed on the way out, so its log is whole up to there and the run can be resumed.
    """


class _GuardedStdout:
    """``sys.stdout`` whose writes raise :class:`_StdoutClosed` instead of BrokenPipeError."""

    def __init__(self, stream: Any):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError as exc:
            raise _StdoutClosed from exc

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError as exc:
            raise _StdoutClosed from exc

    def __getattr__(self, name: str) -> Any:  # isatty, encoding, buffer, fileno, ...
        return getattr(self._stream, name)


def _one_line(text: str) -> str:
    """A message on one line: its lines joined with '; ' (a pydantic error names the field on
    its second line, so keeping only the first would lose it)."""
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is out of range for a float")
    return value


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


def _parse_value(text: str) -> Any:
    """A parameter value as JSON where it parses (3, 0.5, true, null, "x"), else the text.

    The standard library's parser, not orjson: it reads integers exactly (orjson makes
    99999999999999999999999 the float 1e+23). NaN, Infinity and 1e400 are not JSON numbers,
    so they stay text, as orjson left them.
    """
    try:
        return json.loads(text, parse_float=_finite, parse_constant=_no_constant)
    except ValueError:  # JSONDecodeError is one
        return text


def _split_assignment(text: str, flag: str) -> tuple[str, str, str]:
    target, sep, value = text.partition("=")
    plugin, dot, param = target.partition(".")
    if not sep or not dot or not plugin or not param:
        raise UsageError(f"{flag} {text!r}: expected Plugin.param=value, e.g. "
                         f"EarlyStopping.patience=3")
    return plugin, param, value


def _overrides(assignments: Sequence[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for text in assignments:
        plugin, param, value = _split_assignment(text, "--set")
        out.setdefault(plugin, {})[param] = _parse_value(value)
    return out


def _existing(path: str) -> str:
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file or directory")
    return path


# Integers a log stores must fit in 64 bits (orjson's limit), e.g. the seed in the header.
_INT64_MAX = 2**63 - 1


def _in_range(flag: str, value: int | None, least: int, most: int = _INT64_MAX) -> None:
    """A numeric option argparse took as an int, checked against what the command can use."""
    if value is None:
        return
    if value < least:
        raise UsageError(f"{flag} must be at least {least}; got {value}")
    if value > most:
        raise UsageError(f"{flag} must be at most {most}; got {value}")


# --- commands ------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import check_out, run_demo

    _in_range("--epochs", args.epochs, 1)
    _in_range("--seed", args.seed, 0)
    check_out(Path(args.out), force=args.force, names=("--out", "--force"))
    return run_demo(out=Path(args.out), epochs=args.epochs, seed=args.seed,
                    progress=not args.quiet, force=args.force)


def _rank_path(log: str, rank: int | None) -> str:
    """LOG as given to a distributed bus, narrowed to one rank's file by ``--rank``."""
    if rank is None:
        return log
    from .integrations.distributed import rank_log_path

    return rank_log_path(log, rank)


def cmd_audit(args: argparse.Namespace) -> int:
    from .audit import audit, render

    if args.ranks:
        from .integrations.distributed import audit_ranks, render_ranks

        if len(args.logs) != 1 or args.json or args.plot or args.rank is not None:
            raise UsageError("--ranks takes one LOG (as given to the distributed bus) and "
                             "neither --json, --plot nor --rank")
        print(render_ranks(audit_ranks(args.logs[0])))
        return 0
    _in_range("--rank", args.rank, 0)
    args.logs = [_rank_path(log, args.rank) for log in args.logs]
    if args.plot:
        from .plot import check_plot_path

        # Before the work, not after a screenful of audit: matplotlib, and a path it can write.
        check_plot_path(args.plot, flag="--plot")
    results = [audit(_existing(log)) for log in args.logs]
    if args.json:
        from .records import encode_nonfinite

        # NaN and infinities as the log spells them ("NaN", "Infinity", "-Infinity"): orjson
        # would write null, which reads as "not reported".
        data = encode_nonfinite([r.as_dict() for r in results])  # type: ignore[arg-type]
        sys.stdout.buffer.write(orjson.dumps(data[0] if len(data) == 1 else data,
                                             option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
                                             | orjson.OPT_SERIALIZE_NUMPY) + b"\n")
    else:
        print("\n\n".join(render(r) for r in results))
    if args.plot:
        from .plot import plot_audit

        plot_audit(results[0], args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


def _ep(epoch: int | None) -> str:
    """Epochs as people read them: 1-based, as Keras's progress bar and messages count."""
    return "-" if epoch is None else str(epoch + 1)


def _stop_phrase(decisions: Sequence[Any], *, recorded: bool = False) -> str:
    """When and by whom a run would have been stopped ("would have stopped at epoch 8
    (EarlyStopping, rule patience_exhausted)") or was ("stopped at epoch 21 (EarlyStopping)");
    the first stop_training decides, as in the bus."""
    stop = next((d for d in decisions if d.kind == "stop_training"), None)
    if stop is None:
        return "was not stopped by a plugin" if recorded else \
            "would not have been stopped by a plugin"
    if recorded:
        return f"stopped at epoch {_ep(stop.epoch)} ({stop.source})"
    rule = f", rule {stop.code}" if stop.code else ""
    return f"would have stopped at epoch {_ep(stop.epoch)} ({stop.source}{rule})"


def _replay_ranks(args: argparse.Namespace) -> int:
    from .integrations.distributed import replay_ranks

    if args.set or args.sweep or args.rank is not None:
        raise UsageError("--ranks replays every rank as recorded (verified); it takes neither "
                         "--set, --sweep nor --rank")
    result = replay_ranks(args.log)
    for rank, res in sorted(result.results.items()):
        print(f"rank {rank}: replayed {len(res.decisions)} decision(s); the log recorded "
              f"{len(res.recorded)}; stops at epoch {_ep(res.stopped_at)}")
    asked = ", ".join(map(str, result.stopped_by)) or "-"
    print(f"agreed stop: epoch {_ep(result.stopped_at)} (asked by rank {asked})")
    if not result.ok:
        for problem in result.problems:
            print(f"verify: MISMATCH: {problem}", file=sys.stderr)
        return 1
    print(f"verify: every rank's decisions match its log ({len(result.results)} ranks)")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from .replay import replay

    if args.ranks:
        return _replay_ranks(args)
    _in_range("--rank", args.rank, 0)
    log = _existing(_rank_path(args.log, args.rank))
    overrides = _overrides(args.set)
    if args.set and args.verify:
        raise UsageError("--verify checks the recorded parameters; --set changes them: "
                         "give one or the other")
    if args.sweep:
        if args.verify:
            raise UsageError("--verify checks the recorded parameters; --sweep changes them: "
                             "give one or the other")
        if len(args.sweep) > 1:
            raise UsageError(f"--sweep: one parameter at a time; got {len(args.sweep)} ("
                             + ", ".join(s.partition("=")[0] for s in args.sweep)
                             + "): sweeping several at once is not supported; fix the others "
                             "with --set, or run one sweep each")
        return _sweep(log, args.sweep[0], overrides)
    result = replay(log, overrides=overrides, verify=args.verify)
    if overrides:
        # Named, since the plugin that stops the run need not be the one changed (a what-if of
        # ReduceLROnPlateau answers when EarlyStopping would have stopped it).
        what = ", ".join(f"{p}.{k}={v!r}" for p, ps in overrides.items() for k, v in ps.items())
        print(f"With {what} the run {_stop_phrase(result.decisions)}; the recorded run "
              f"{_stop_phrase(result.recorded, recorded=True)}.")
    print(f"replayed {len(result.decisions)} decision(s) (epochs counted from 1); the log recorded "
          f"{len(result.recorded)} from the same plugins")
    for d in result.decisions:
        print(f"  epoch {_ep(d.epoch):>4}  {d.kind:<17} {d.source:<20} {d.reason}")
    if result.diverged_at is not None:
        print(f"note: from event {result.diverged_at} on, the replayed learning rate differs from "
              "the recorded one: the recorded metrics after that point come from a run trained "
              "differently, so later answers are estimates, not facts.")
    if args.verify:
        if result.mismatch is not None:
            print(f"verify: MISMATCH: {result.mismatch}", file=sys.stderr)
            return 1
        print(f"verify: all {len(result.decisions)} decisions match the log")
    return 0


def _sweep(log: str, spec: str, base: dict[str, dict[str, Any]]) -> int:
    from .replay import replay_each

    plugin, param, values = _split_assignment(spec, "--sweep")
    if values == "":
        raise UsageError(f"--sweep {spec!r}: give at least one value")
    texts = values.split(",")
    for i, text in enumerate(texts):
        if text.strip() == "":
            raise UsageError(f"--sweep {spec!r}: value {i + 1} of {len(texts)} is empty; "
                             "give the values as V1,V2,... with no empty one")
    choices = [_parse_value(v) for v in texts]
    variants = []
    for value in choices:
        overrides = {k: dict(v) for k, v in base.items()}
        overrides.setdefault(plugin, {})[param] = value
        variants.append(overrides)
    rows = []
    recorded_stop = None
    for value, result in zip(choices, replay_each(log, variants)):  # the log read once
        recorded_stop = result.recorded_stop
        lr = sum(d.kind == "set_learning_rate" for d in result.decisions)
        rows.append((repr(value), _ep(result.stopped_at),
                     str(len(result.decisions)), str(lr),
                     "exact" if result.diverged_at is None else f"estimate after event "
                     f"{result.diverged_at}"))
    header = (f"{plugin}.{param}", "stops at epoch", "decisions", "lr changes", "answer")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    ran = "was not stopped by a plugin" if recorded_stop is None else \
        f"stopped at epoch {_ep(recorded_stop)}"
    print(f"(the recorded run {ran})")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert

    count = convert(_existing(args.log), args.out, to=args.to)
    print(f"wrote {count} records to {args.out} ({args.to})")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from .registry import registry

    infos = registry.info()
    if args.json:
        sys.stdout.buffer.write(orjson.dumps([i.__dict__ for i in infos],
                                             option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    rows = [(i.name, f"{i.distribution or '-'} {i.version or ''}".strip(), i.target) for i in infos]
    widths = [max(len(h), *(len(r[c]) for r in rows)) if rows else len(h)
              for c, h in enumerate(("plugin", "from", "target"))]
    print("  ".join(h.ljust(w) for h, w in zip(("plugin", "from", "target"), widths)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import check_out, write_report

    overrides = _overrides(args.set)
    check_out(args.out, force=args.force, flag="--out")  # before the logs are read
    page = write_report([_existing(log) for log in args.logs], args.out, overrides=overrides,
                        force=args.force)
    what_if = " with a what-if" if overrides else ""
    print(f"wrote {args.out}: {len(page.runs)} run(s), {len(page.panels)} panel(s){what_if}; "
          "open it in a browser (it loads nothing from the network)")
    return 0


def add_report_command(sub: Any) -> None:
    """``eventbus report``: the run(s) as one self-contained HTML page (eventbus.report)."""
    rpt = sub.add_parser(
        "report", help="one HTML page: curves, decisions, why it stopped, checkpoints",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write one self-contained HTML page of the run(s): metric curves per\n"
                    "family, every decision at its epoch (its reason on hover), the best epoch,\n"
                    "why the run stopped, checkpoints with their hashes, resumes, warnings and\n"
                    "faults. Several logs are overlaid; --set adds a what-if replay.",
        epilog="example:\n  eventbus report demo-run/events.jsonl -o report.html "
               "--set EarlyStopping.patience=3")
    rpt.add_argument("logs", nargs="+", metavar="LOG",
                     help="event log(s), .jsonl or .parquet; several are overlaid")
    rpt.add_argument("-o", "--out", default="report.html", metavar="FILE.html",
                     help="the page to write (default: report.html)")
    rpt.add_argument("--set", action="append", default=[], metavar="PLUGIN.PARAM=VALUE",
                     help="add a what-if: the decisions replayed with this parameter changed "
                          "(repeatable, as replay --set)")
    rpt.add_argument("--force", action="store_true",
                     help="replace FILE.html even if it is not a report this command wrote")
    rpt.set_defaults(func=cmd_report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eventbus", description="An event-sourced callback bus for training loops.")
    parser.add_argument("--version", action="version", version=f"eventbus {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="train a small NumPy model with every built-in plugin")
    demo.add_argument("--out", default="demo-run", help="output folder (default: demo-run)")
    demo.add_argument("--epochs", type=int, default=40, help="at most this many epochs")
    demo.add_argument("--seed", type=int, default=0, help="data and weight seed")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.add_argument("--force", action="store_true",
                      help="write into --out even if it holds files an earlier demo did not "
                           "write (those are kept; the demo's own files are replaced)")
    demo.set_defaults(func=cmd_demo)

    aud = sub.add_parser("audit", help="why did the run do what it did")
    aud.add_argument("logs", nargs="+", metavar="LOG", help="event log(s), .jsonl or .parquet")
    aud.add_argument("--json", action="store_true", help="the same as JSON")
    aud.add_argument("--plot", metavar="FILE.png", help="draw metrics with decisions marked")
    aud.add_argument("--ranks", action="store_true",
                     help="LOG is a distributed run's log: audit every rank together")
    aud.add_argument("--rank", type=int, metavar="R", help="only rank R's log of a distributed run")
    aud.set_defaults(func=cmd_audit)

    rep = sub.add_parser("replay", help="recompute decisions; what-if with other parameters")
    rep.add_argument("log", metavar="LOG")
    rep.add_argument("--set", action="append", default=[], metavar="PLUGIN.PARAM=VALUE",
                     help="replay with this parameter changed (repeatable)")
    rep.add_argument("--sweep", action="append", default=[], metavar="PLUGIN.PARAM=V1,V2,...",
                     help="one replay per value, as a table (one parameter)")
    rep.add_argument("--ranks", action="store_true",
                     help="LOG is a distributed run's log: replay and verify every rank")
    rep.add_argument("--rank", type=int, metavar="R", help="only rank R's log of a distributed run")
    rep.add_argument("--verify", action="store_true",
                     help="exit 1 at the first decision that differs from the log")
    rep.set_defaults(func=cmd_replay)

    con = sub.add_parser("convert", help="rewrite a log as JSON Lines, Parquet, CSV or TensorBoard")
    con.add_argument("log", metavar="LOG")
    con.add_argument("out", metavar="OUT")
    con.add_argument("--to", required=True, choices=["jsonl", "parquet", "csv", "tensorboard"])
    con.set_defaults(func=cmd_convert)

    plg = sub.add_parser("plugins", help="every plugin the registry knows")
    plg.add_argument("--json", action="store_true")
    plg.set_defaults(func=cmd_plugins)
    add_report_command(sub)
    return parser


def _one_line_warnings(command: str) -> Any:
    """Warnings (a torn last line, a sink failure) as one line each, like the errors."""

    def show(message: Any, category: type[Warning], *_: Any, **__: Any) -> None:
        text = _one_line(str(message)) or category.__name__
        print(f"eventbus {command}: warning: {text}", file=sys.stderr)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    stdout = sys.stdout
    sys.stdout = _GuardedStdout(stdout)  # type: ignore[assignment]
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings(args.command)
            code = int(args.func(args))
            sys.stdout.flush()  # here, where a closed pipe is handled, not at exit
            return code
    except (_StdoutClosed, BrokenPipeError):
        # The reader went away (``eventbus audit LOG | head``): stop quietly, as cat does. What
        # is still buffered for stdout goes nowhere rather than failing again at exit.
        _discard_stdout(stdout)
        return STDOUT_CLOSED
    except (EventBusError, OSError, ValueError, ImportError) as exc:
        message = _one_line(str(exc)) or type(exc).__name__
        print(f"eventbus {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"eventbus {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        sys.stdout = stdout


def _discard_stdout(stream: Any) -> None:
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (captured in tests)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


if __name__ == "__main__":
    raise SystemExit(main())
