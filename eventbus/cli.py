"""The command line: ``eventbus demo | audit | replay | convert | plugins | report``.

This is the one place that wires the core, the plugins and the sinks together. Each command is
an ``add_*`` function (its arguments, its --help with a description, defaults and examples)
plus its ``cmd_*`` handler, listed once in :data:`COMMANDS`. Text for people counts epochs
from 1, ``--json`` from 0, and each says so (:data:`EPOCHS_NOTE`). Every error a
user can cause (a missing file, a log that is not a log, an unknown plugin or parameter, a bad
value) ends as one line on stderr and exit status 2; ``--verify`` finding a difference exits 1.
Everything written for people goes through :func:`_out` and :func:`_err` (warnings and
argparse's errors included), which show a log's control characters as escapes
(:mod:`eventbus.terminal`); ``--json`` escapes them as JSON does.
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
from typing import Any, NoReturn

import orjson

from ._version import __version__
from .errors import EventBusError, UsageError
from .metrics import shown
from .terminal import columns, fit, inline, json_safe, printable, width_of

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


def _out(text: object = "") -> None:
    """Text for people on stdout. A log is untrusted: whatever of it reaches here, a control
    character (ESC, a carriage return, C1, U+202E) is shown as an escape, never obeyed."""
    print(printable(str(text)))


def _err(text: str) -> None:
    """As :func:`_out`, on stderr."""
    print(printable(text), file=sys.stderr)


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
        return json.loads(text, parse_float=_finite, parse_constant=_no_constant,
                          parse_int=_exact_int)
    except UsageError:
        raise
    except ValueError:  # JSONDecodeError is one
        return text
    except RecursionError:
        raise UsageError(f"value {shown(text)}: nested too deeply to be a parameter") from None


def _exact_int(text: str) -> int:
    if len(text) > 4000:  # Python's own limit on reading one is 4,300 digits
        raise UsageError(f"value {shown(text)}: an integer of {len(text)} digits is not a "
                         "parameter any plugin takes")
    return int(text)


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
        from .integrations.distributed import AGREEMENT, audit_ranks, render_ranks

        if len(args.logs) != 1 or args.plot or args.rank is not None:
            raise UsageError("--ranks takes one LOG (as given to the distributed bus) and "
                             "neither --plot nor --rank")
        audits = audit_ranks(args.logs[0])
        if args.json:
            stops = {rank: a.stop for rank, a in audits.items() if a.stop is not None}
            _write_json({"epochs_counted_from": 0,
                         "stopped_at": sorted({s.epoch for s in stops.values()
                                               if s.epoch is not None}),
                         "asked_by": sorted(r for r, s in stops.items()
                                            if s.source != AGREEMENT),
                         "ranks": {str(rank): a.as_dict() for rank, a in audits.items()}})
        else:
            _out(render_ranks(audits))
        return 0
    _in_range("--rank", args.rank, 0)
    args.logs = [_rank_path(log, args.rank) for log in args.logs]
    if args.plot:
        from .plot import check_plot_path

        # Before the work, not after a screenful of audit: matplotlib, and a path it can write.
        check_plot_path(args.plot, flag="--plot")
    results = [audit(_existing(log)) for log in args.logs]
    if args.json:
        data = [r.as_dict() for r in results]
        _write_json(data[0] if len(data) == 1 else data)
    else:
        # On a terminal, long lines broken at spaces (a reason under the reason column).
        _out(fit("\n\n".join(render(r) for r in results), width_of(sys.stdout)))
    if args.plot:
        from .plot import plot_audit

        plot_audit(results[0], args.plot)
        _err(f"plot written to {args.plot}")
    return 0


def _ep(epoch: int | None) -> str:
    """Epochs as people read them: 1-based, as Keras's progress bar and messages count."""
    return "-" if epoch is None else str(epoch + 1)


def _write_json(data: Any) -> None:
    """``data`` on stdout as indented JSON, NaN and infinities as the log spells them ("NaN",
    "Infinity", "-Infinity"): orjson would write null, which reads as "not reported". C0 is
    escaped by JSON itself; C1, bidirectional controls and line separators by
    :func:`~eventbus.terminal.json_safe`, as ``\\uXXXX``, so the data read back is the same."""
    from .records import spell_nonfinite

    data = spell_nonfinite(data)
    try:
        text = orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
                            | orjson.OPT_SERIALIZE_NUMPY).decode()
    except TypeError:
        # An integer past 64 bits (a --set value, read exactly), or a lone surrogate (a file
        # name's undecodable bytes): the standard library writes them, where orjson refuses.
        text = json.dumps(data, indent=2, ensure_ascii=False)
    sys.stdout.buffer.write(json_safe(text).encode() + b"\n")


def _decision_data(d: Any) -> dict[str, Any]:
    """A decision as --json shows it: its record less the envelope every record shares."""
    return {k: v for k, v in d.model_dump().items() if k not in ("v", "run_id")}


def _recorded_epochs(result: Any) -> str:
    """"the 21 recorded epochs", or the last one's number when the log did not start at 1 (a
    fit from initial_epoch, a resumed run)."""
    last = result.last_recorded_epoch
    if last is None:
        return "the log, which records no epoch"
    if result.epochs_recorded == last + 1:
        return f"the {result.epochs_recorded} recorded epochs"
    return f"the recorded epochs (the log ends at epoch {_ep(last)})"


def _what_if_stop(result: Any) -> str:
    """When the replayed plugins would have stopped the run, and which plugin (with its rule):
    the first stop_training decides, as in the bus."""
    stop = next((d for d in result.decisions if d.kind == "stop_training"), None)
    if stop is None:
        return f"would not have stopped within {_recorded_epochs(result)}"
    rule = f", rule {inline(stop.code)}" if stop.code else ""
    of = f" of the {result.epochs_recorded} recorded" if result.epochs_recorded == \
        (result.last_recorded_epoch or 0) + 1 else ""
    return f"would have stopped at epoch {_ep(stop.epoch)}{of} ({inline(stop.source)}{rule})"


def _recorded_stop(result: Any) -> str:
    """How the recorded run ended, as far as the replayed plugins' decisions say: stopped, a
    stop the loop deferred (it ran on past the epoch the plugin asked), or not stopped."""
    stops = [d for d in result.recorded if d.kind == "stop_training"]
    if not stops:
        return "was not stopped by a plugin"
    first = stops[0]
    if result.recorded_deferred and result.recorded_deferred[0] is first:
        acted = next((d for d in stops if all(d is not x for x in result.recorded_deferred)),
                     None)
        then = f"it stopped at epoch {_ep(acted.epoch)}" if acted is not None else \
            f"it ran to epoch {_ep(result.last_recorded_epoch)}"
        return (f"was asked to stop at epoch {_ep(first.epoch)} ({inline(first.source)}), a "
                f"stop the loop deferred: {then}")
    return f"stopped at epoch {_ep(first.epoch)} ({inline(first.source)})"


def _exactness(result: Any) -> str:
    """Whether a what-if is a fact or an estimate, and from which epoch: said first, since
    everything after depends on it."""
    if result.diverged_at is None:
        return ("exact (the replayed learning rate never leaves the recorded one, so the "
                "recorded metrics are those this run would have seen)")
    return (f"an estimate from epoch {_ep(result.diverged_epoch)} on (the replayed learning "
            "rate differs from the recorded one there, so the recorded metrics after it come "
            "from a run trained differently)")


def _replay_ranks(args: argparse.Namespace) -> int:
    from .integrations.distributed import replay_ranks

    if args.set or args.sweep or args.rank is not None:
        raise UsageError("--ranks replays every rank as recorded (verified); it takes neither "
                         "--set, --sweep nor --rank")
    result = replay_ranks(args.log)
    if args.json:
        _write_json({
            "epochs_counted_from": 0, "log": args.log, "stopped_at": result.stopped_at,
            "stopped_by": result.stopped_by,
            "recorded_stops": {str(k): v for k, v in result.recorded_stops.items()},
            "ok": result.ok, "problems": result.problems,
            "ranks": {str(rank): {"decisions": [_decision_data(d) for d in res.decisions],
                                  "recorded_decisions": len(res.recorded),
                                  "stopped_at": res.stopped_at}
                      for rank, res in sorted(result.results.items())}})
        for problem in result.problems:
            _err(f"verify: MISMATCH: {inline(problem)}")
        return 0 if result.ok else 1
    for rank, res in sorted(result.results.items()):
        _out(f"rank {rank}: replayed {len(res.decisions)} decision(s); the log recorded "
             f"{len(res.recorded)}; stops at epoch {_ep(res.stopped_at)}")
    asked = ", ".join(map(str, result.stopped_by)) or "-"
    _out(f"agreed stop: epoch {_ep(result.stopped_at)} (asked by rank {asked})")
    if not result.ok:
        for problem in result.problems:
            _err(f"verify: MISMATCH: {inline(problem)}")
        return 1
    _out(f"verify: every rank's decisions match its log ({len(result.results)} ranks)")
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
        return _sweep(log, args.sweep[0], overrides, as_json=args.json)
    result = replay(log, overrides=overrides, verify=args.verify)
    if args.json:
        _write_json(_replay_data(log, overrides, result, verify=args.verify))
    else:
        _print_replay(overrides, result)
    if args.verify:
        if result.mismatch is not None:
            _err(f"verify: MISMATCH: {inline(result.mismatch)}")
            return 1
        if not args.json:
            _out(f"verify: all {len(result.decisions)} decisions match the log")
            if result.unchecked:
                sources = sorted({d.source for d in result.unchecked})
                _out(f"verify: {len(result.unchecked)} more decision(s) the log holds, by "
                     f"{inline(', '.join(sources))}, are not checked: replay cannot rebuild "
                     "those plugins (registered after the run started, or with parameters the "
                     "log could not record, such as a schedule function, whose recorded "
                     "decisions replay applies as they were)")
    return 0


def _print_replay(overrides: dict[str, dict[str, Any]], result: Any) -> None:
    if not overrides and result.diverged_at is not None:
        # Without --set the recorded parameters replay: a different rate means a changed log or
        # changed plugins, and what follows is no more than an estimate either.
        _out(f"note: {_exactness(result)}.")
    if overrides:
        # The caveat first: whether the answer is a fact or an estimate decides how to read it.
        # The stopping plugin is named, since it need not be the one changed (a what-if of
        # ReduceLROnPlateau answers when EarlyStopping would have stopped the run).
        what = ", ".join(f"{p}.{k}={v!r}" for p, ps in overrides.items() for k, v in ps.items())
        _out(f"What-if with {what}: {_exactness(result)}.")
        _out(f"  The run {_what_if_stop(result)}; the recorded run {_recorded_stop(result)}.")
    _print_warnings(result)
    _out(f"replayed {len(result.decisions)} decision(s) (epochs counted from 1); the log recorded "
         f"{len(result.recorded)} from the same plugins")
    for d in result.decisions:
        _out(f"  epoch {_ep(d.epoch):>4}  {d.kind:<17} {inline(d.source):<20} {inline(d.reason)}")


def _print_warnings(result: Any, prefix: str = "") -> None:
    """What the replayed plugins warned, beside the answer: a monitor the log never holds (a
    misspelt metric) answers "would not have stopped" for a reason the answer must say."""
    for warning in result.warnings:
        _out(f"  {prefix}warned as replayed: {inline(warning.text)}")


def _warnings_data(result: Any) -> list[dict[str, Any]]:
    return [{"source": w.source, "epoch": w.epoch, "message": w.message}
            for w in result.warnings]


def _replay_data(log: str, overrides: dict[str, dict[str, Any]], result: Any, *,
                 verify: bool) -> dict[str, Any]:
    """``replay --json``: the answer and the decisions as data; epochs 0-based."""
    data: dict[str, Any] = {
        "epochs_counted_from": 0,
        "log": log,
        "overrides": overrides,
        "exact": result.diverged_at is None,
        "diverged_at": result.diverged_at,
        "diverged_epoch": result.diverged_epoch,
        "stopped_at": result.stopped_at,
        "recorded_stop": result.recorded_stop,
        "recorded_deferred": [d.epoch for d in result.recorded_deferred],
        "last_recorded_epoch": result.last_recorded_epoch,
        "epochs_recorded": result.epochs_recorded,
        "decisions": [_decision_data(d) for d in result.decisions],
        "recorded_decisions": len(result.recorded),
        "unchecked": [_decision_data(d) for d in result.unchecked],
        "warnings": _warnings_data(result),
    }
    if verify:
        data["verify"] = {"ok": result.mismatch is None,
                          "mismatch": None if result.mismatch is None else str(result.mismatch),
                          "unchecked": len(result.unchecked)}
    return data


def _sweep(log: str, spec: str, base: dict[str, dict[str, Any]], *, as_json: bool) -> int:
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
    results = replay_each(log, variants)  # the log read once
    if as_json:
        last = results[-1] if results else None
        _write_json({
            "epochs_counted_from": 0, "log": log, "parameter": f"{plugin}.{param}",
            "overrides": base,
            "recorded_stop": last.recorded_stop if last else None,
            "last_recorded_epoch": last.last_recorded_epoch if last else None,
            "epochs_recorded": last.epochs_recorded if last else 0,
            "rows": [{"value": value, "stopped_at": result.stopped_at,
                      "decisions": len(result.decisions),
                      "lr_changes": sum(d.kind == "set_learning_rate" for d in result.decisions),
                      "exact": result.diverged_at is None, "diverged_at": result.diverged_at,
                      "diverged_epoch": result.diverged_epoch,
                      "warnings": _warnings_data(result)}
                     for value, result in zip(choices, results)]})
        return 0
    rows = []
    for value, result in zip(choices, results):
        lr = sum(d.kind == "set_learning_rate" for d in result.decisions)
        rows.append((repr(value), _ep(result.stopped_at),
                     str(len(result.decisions)), str(lr),
                     "exact" if result.diverged_at is None else
                     f"estimate from epoch {_ep(result.diverged_epoch)}"))
    header = (f"{plugin}.{param}", "stops at epoch", "decisions", "lr changes", "answer")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    _out("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    for row in rows:
        _out("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    _out(f'epochs counted from 1; "-": would not have stopped within '
         f"{_recorded_epochs(results[0])}")
    _out(f"the recorded run {_recorded_stop(results[0])}")
    for value, result in zip(choices, results):
        _print_warnings(result, prefix=f"{plugin}.{param}={value!r}: ")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert

    _out(convert(_existing(args.log), args.out, to=args.to, force=args.force,
                 checkpoint_root=args.checkpoint_root))
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from .registry import registry

    infos = registry.info()
    if args.json:
        _write_json([i.__dict__ for i in infos])
        return 0
    rows = [("plugin", "from", "target"), *(
        (i.name, f"{i.distribution or '-'} {i.version or ''}".strip(), i.target) for i in infos)]
    rows = [tuple(printable(cell) for cell in row) for row in rows]  # names a package chose
    widths = [max(columns(row[c]) for row in rows) for c in range(3)]

    def line(row: tuple[str, ...]) -> str:  # the last column unpadded: no trailing blanks
        return "  ".join(c + " " * (w - columns(c)) for c, w in zip(row, widths)).rstrip()

    width = width_of(sys.stdout)
    if width is None or max(map(columns, map(line, rows))) <= width:
        for row in rows:
            _out(line(row))
        return 0
    for row in rows:  # too wide for the terminal: each target on its own line, under its plugin
        _out(fit(line(row[:2]), width))
        _out(fit(f"  {row[2]}", width))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import check_out, write_report

    overrides = _overrides(args.set)
    check_out(args.out, force=args.force, flag="--out")  # before the logs are read
    page = write_report([_existing(log) for log in args.logs], args.out, overrides=overrides,
                        force=args.force)
    what_if = " with a what-if" if overrides else ""
    _out(f"wrote {args.out}: {len(page.runs)} run(s), {len(page.panels)} panel(s){what_if}; "
         "open it in a browser (it loads nothing from the network)")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .verify import find_logs, render, verify_log

    logs = find_logs([_existing(path) for path in args.paths])
    if not logs:
        raise UsageError(f"no logs (*.jsonl, *.parquet) in {', '.join(args.paths)}")
    verdicts = [verify_log(log, root=args.root) for log in logs]
    if args.json:
        # json.dumps escapes every character past ASCII (ensure_ascii), so _out changes nothing.
        _out(json.dumps([v.as_dict() for v in verdicts], indent=2))
    else:
        _out(render(verdicts))
    return 0 if all(v.ok for v in verdicts) else 1


def add_verify(sub: Any) -> None:
    ver = _command(
        sub, "verify", summary="check stored logs: decisions replay the same, checkpoints intact",
        description="For each log (files, or every *.jsonl and *.parquet below a directory):\n"
                    "replay it with --verify, and hash the newest recorded save of each\n"
                    "checkpoint path against its sha256. A table, then what failed (\"stop\n"
                    "moves from epoch 21 to 19\"). Exit 1 on any mismatch or changed\n"
                    "checkpoint; a missing checkpoint is listed, not a failure. Nothing is\n"
                    "written, and a link where a checkpoint was is never followed.\n\n"
                    + EPOCHS_NOTE,
        examples=["eventbus verify demo-run/events.jsonl",
                  "eventbus verify tests/golden --json",
                  "eventbus verify runs/ --root /data/experiments"])
    ver.add_argument("paths", nargs="+", metavar="PATH",
                     help="a log, or a directory searched for logs (links not followed)")
    ver.add_argument("--root", default=".", metavar="DIR",
                     help="where relative checkpoint paths are found (the run's directory)")
    ver.add_argument("--json", action="store_true", help="one object per log, for CI")
    ver.set_defaults(func=cmd_verify)


def add_report_command(sub: Any) -> None:
    """``eventbus report``: the run(s) as one self-contained HTML page (eventbus.report)."""
    rpt = _command(
        sub, "report", summary="one HTML page: curves, decisions, why it stopped, checkpoints",
        description="Write one self-contained HTML page of the run(s): metric curves per\n"
                    "family, every decision at its epoch (its reason on hover), the best epoch,\n"
                    "why the run stopped, checkpoints with their hashes, resumes, warnings and\n"
                    "faults. Several logs are overlaid; --set adds a what-if replay.\n\n"
                    + EPOCHS_NOTE,
        examples=["eventbus report demo-run/events.jsonl",
                  "eventbus report demo-run/events.jsonl -o report.html "
                  "--set EarlyStopping.patience=3",
                  "eventbus report run-a/events.jsonl run-b/events.jsonl -o compare.html"])
    rpt.add_argument("logs", nargs="+", metavar="LOG",
                     help="event log(s), .jsonl or .parquet; several are overlaid")
    rpt.add_argument("-o", "--out", default="report.html", metavar="FILE.html",
                     help="the page to write")
    rpt.add_argument("--set", action="append", default=[], metavar="PLUGIN.PARAM=VALUE",
                     help="add a what-if: the decisions replayed with this parameter changed "
                          "(repeatable, as replay --set)")
    rpt.add_argument("--force", action="store_true",
                     help="replace FILE.html even if it is not a report this command wrote")
    rpt.set_defaults(func=cmd_report)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter,
                     argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions and examples as written (their line breaks kept), and each option's default
    where it has one worth saying: not for a flag that is off, a list that starts empty, or an
    option with no default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        default = action.default
        if default is None or default is False or default == [] or \
                default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


EPOCHS_NOTE = ("Epochs are counted from 1 in text for people, as Keras prints them (epoch 9\n"
               "of 21), and from 0 in --json output, in the log, in CSV files and in\n"
               "TensorBoard steps, where the field is named `epoch`.")


def _command(sub: Any, name: str, *, summary: str, description: str,
             examples: Sequence[str], aliases: Sequence[str] = ()) -> argparse.ArgumentParser:
    """A subcommand whose --help has a description, its examples and its options' defaults."""
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)
    return sub.add_parser(name, help=summary, description=description, epilog=epilog,
                          formatter_class=_HelpFormatter, aliases=list(aliases))


# --- one function per command: its arguments, its help, its handler --------------------------


def add_demo(sub: Any) -> None:
    demo = _command(
        sub, "demo", summary="train a small NumPy model with every built-in plugin",
        description="Train a two-layer NumPy network on two noisy spirals with every built-in\n"
                    "plugin, write its logs, checkpoints, CSV and TensorBoard files into --out,\n"
                    "then print the audit and the commands to try next. Deterministic for a seed.",
        examples=["eventbus demo", "eventbus demo --out runs/demo --epochs 10 --quiet"])
    demo.add_argument("--out", default="demo-run", metavar="DIR", help="output folder")
    demo.add_argument("--epochs", type=int, default=40, metavar="N",
                      help="at most this many epochs")
    demo.add_argument("--seed", type=int, default=0, metavar="N", help="data and weight seed")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.add_argument("--force", action="store_true",
                      help="write into --out even if it holds files an earlier demo did not "
                           "write (those are kept; the demo's own files are replaced)")
    demo.set_defaults(func=cmd_demo)


def add_audit(sub: Any) -> None:
    aud = _command(
        sub, "audit", summary="why did the run do what it did",
        description="Summarise a run from its log alone: epochs run, why it ended (plugin, rule,\n"
                    "epoch, reason; a stop the loop deferred too), the best value of each\n"
                    "monitored metric, learning-rate changes, checkpoints, resumes, warnings,\n"
                    "faults, and every decision.\n\n" + EPOCHS_NOTE,
        examples=["eventbus audit demo-run/events.jsonl",
                  "eventbus audit demo-run/events.jsonl --json | jq .stop",
                  "eventbus audit demo-run/events.jsonl --plot run.png",
                  "eventbus audit runs/events.jsonl --ranks"])
    aud.add_argument("logs", nargs="+", metavar="LOG",
                     help="event log(s): a .jsonl file, or a .parquet file or segment directory")
    aud.add_argument("--json", action="store_true",
                     help="the same as JSON (epochs 0-based), a list for several logs")
    aud.add_argument("--plot", metavar="FILE.png",
                     help="also draw the first log's metrics, learning rate and decisions "
                          "(needs matplotlib; the format comes from the extension)")
    aud.add_argument("--ranks", action="store_true",
                     help="LOG is a distributed run's log: audit every rank together")
    aud.add_argument("--rank", type=int, metavar="R", help="only rank R's log of a distributed run")
    aud.set_defaults(func=cmd_audit)


def add_replay(sub: Any) -> None:
    rep = _command(
        sub, "replay", summary="recompute decisions; what-if with other parameters",
        description="Rebuild the run's decision plugins from the log header, feed them the\n"
                    "recorded events, and print their decisions: --verify compares them with the\n"
                    "log, --set and --sweep answer what other parameters would have done. A\n"
                    "what-if is computed on the recorded metrics: exact while the replayed\n"
                    "learning rate matches the recorded one, an estimate after that, and silent\n"
                    "past the last recorded epoch.\n\n" + EPOCHS_NOTE,
        examples=["eventbus replay demo-run/events.jsonl --verify",
                  "eventbus replay demo-run/events.jsonl --set EarlyStopping.patience=3",
                  "eventbus replay demo-run/events.jsonl --sweep ReduceLROnPlateau.patience=1,2,4",
                  "eventbus replay demo-run/events.jsonl --set EarlyStopping.patience=3 --json",
                  "eventbus what-if demo-run/events.jsonl --set EarlyStopping.patience=3"],
        aliases=["what-if"])
    rep.add_argument("log", metavar="LOG",
                     help="event log: a .jsonl file, or a .parquet file or segment directory")
    rep.add_argument("--set", action="append", default=[], metavar="PLUGIN.PARAM=VALUE",
                     help="replay with this parameter changed (repeatable); VALUE is JSON "
                          "where it parses, else text")
    rep.add_argument("--sweep", action="append", default=[], metavar="PLUGIN.PARAM=V1,V2,...",
                     help="one replay per value, as a table (one parameter)")
    rep.add_argument("--json", action="store_true",
                     help="the answer, the decisions or the sweep's rows as JSON (epochs 0-based)")
    rep.add_argument("--ranks", action="store_true",
                     help="LOG is a distributed run's log: replay and verify every rank")
    rep.add_argument("--rank", type=int, metavar="R", help="only rank R's log of a distributed run")
    rep.add_argument("--verify", action="store_true",
                     help="exit 1 at the first decision that differs from the log")
    rep.set_defaults(func=cmd_replay)


def add_convert(sub: Any) -> None:
    from .convert import FORMATS

    con = _command(
        sub, "convert",
        summary="rewrite a log as JSON Lines, Parquet, CSV, TensorBoard or into MLflow",
        description="Rewrite a log in another format. The format comes from OUT's extension\n"
                    "(.jsonl, .parquet, .csv); --to is needed only when the name does not say\n"
                    "(a TensorBoard log directory, or an MLflow tracking URI as OUT with\n"
                    "--to mlflow). An existing OUT is replaced only with --force. Prints what\n"
                    "it wrote: records for a log or MLflow, rows for CSV, epochs for\n"
                    "TensorBoard.",
        examples=["eventbus convert demo-run/events.jsonl history.csv",
                  "eventbus convert demo-run/events.jsonl copy.parquet",
                  "eventbus convert demo-run/events.jsonl tb-logs --to tensorboard",
                  "eventbus convert demo-run/events.jsonl history.csv --force",
                  "eventbus convert demo-run/events.jsonl sqlite:///mlflow.db --to mlflow"])
    con.add_argument("log", metavar="LOG",
                     help="event log: a .jsonl file, or a .parquet file or segment directory")
    con.add_argument("out", metavar="OUT",
                     help="the file or directory to write, whose extension names the format; "
                          "for --to mlflow, the tracking URI")
    con.add_argument("--to", choices=FORMATS,
                     help="the format, when OUT's name does not say it (default: from OUT's "
                          "extension)")
    con.add_argument("--force", action="store_true",
                     help="replace OUT if it exists (a file, or a directory with files in it; "
                          "TensorBoard adds its event files to those there)")
    con.add_argument("--checkpoint-root", metavar="DIR",
                     help="--to mlflow: upload only checkpoints below DIR (relative paths in "
                          "the log are taken from it); default: the folder of LOG")
    con.set_defaults(func=cmd_convert)


def add_plugins(sub: Any) -> None:
    plg = _command(
        sub, "plugins", summary="every plugin the registry knows",
        description="List every plugin the registry knows (entry points in the eventbus group,\n"
                    "built-in and third-party): name, distribution and version, module:Class.",
        examples=["eventbus plugins", "eventbus plugins --json"])
    plg.add_argument("--json", action="store_true", help="the same as JSON")
    plg.set_defaults(func=cmd_plugins)


#: Every subcommand, in the order --help lists them: a new command is one ``add_*`` function
#: above and one entry here.
COMMANDS = (add_demo, add_audit, add_replay, add_convert, add_verify, add_plugins,
            add_report_command)


class _Parser(argparse.ArgumentParser):
    """argparse's parser, its error line shown through :func:`printable`: an argument it
    rejects may be a file name a shell's glob found, not text the user typed."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, printable(f"{self.prog}: error: {message}\n"))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="eventbus", formatter_class=_HelpFormatter,
        description="An event-sourced callback bus for training loops: ask a run's log why\n"
                    "it did what it did, and what other parameters would have done.\n\n"
                    + EPOCHS_NOTE,
        epilog="examples:\n  eventbus demo\n  eventbus audit demo-run/events.jsonl\n"
               "  eventbus replay demo-run/events.jsonl --set EarlyStopping.patience=3\n\n"
               "Run 'eventbus COMMAND --help' for a command's options and examples.")
    parser.add_argument("--version", action="version", version=f"eventbus {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    parser.set_defaults(commands=sub.choices)  # each command's parser, for its errors
    return parser


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments; what is left over is the command's error, with its usage, saying the
    form a ``--set`` or ``--sweep`` given with a space for its '=' takes (argparse gave the
    top level's usage and "unrecognized arguments: 3")."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        command = args.commands.get(args.command, parser)
        spaced = [(flag, value) for flag in ("set", "sweep")
                  for value in (getattr(args, flag, None) or []) if "=" not in value]
        hint = (f"; --{spaced[0][0]} takes PLUGIN.PARAM=VALUE as one argument: "
                f"--{spaced[0][0]} {spaced[0][1]}=VALUE") if spaced else ""
        command.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    return args


def _one_line_warnings(command: str) -> Any:
    """Warnings (a torn last line, a sink failure, a resume's refusal naming a path) as one
    line each, like the errors, their text from a log escaped by :func:`_err`."""

    def show(message: Any, category: type[Warning], *_: Any, **__: Any) -> None:
        text = _one_line(str(message)) or category.__name__
        _err(f"eventbus {command}: warning: {text}")

    return show


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
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
        _err(f"eventbus {args.command}: error: {message}")
        return 2
    except Exception as exc:
        if not _is_mlflow_error(exc):
            raise
        # The store refused (a bad URI, a server's answer): a user error, not a traceback.
        message = _one_line(str(exc)) or type(exc).__name__
        _err(f"eventbus {args.command}: error: MLflow: {message}")
        return 2
    except KeyboardInterrupt:
        _err(f"eventbus {args.command}: interrupted")
        return 130
    finally:
        sys.stdout = stdout


def _is_mlflow_error(exc: BaseException) -> bool:
    """Whether ``exc`` is MLflow's (``MlflowException``); MLflow is never imported for this:
    if it was not imported, nothing raised one."""
    errors = sys.modules.get("mlflow.exceptions")
    return errors is not None and isinstance(exc, errors.MlflowException)


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
