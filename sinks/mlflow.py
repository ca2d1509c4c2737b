"""MLflow: a run's parameters, metrics, decisions and checkpoints in an MLflow tracking store.

    bus = Bus(plugins, log=["runs/x.jsonl", MLflowSink("sqlite:///mlflow.db")])

One event-log run is one MLflow run, found again by its tag ``eventbus.run_id``: a resumed run
and a backfill (:func:`backfill`, ``eventbus convert LOG URI --to mlflow``) write into the MLflow
run the first attempt made. What goes where:

- params: every plugin's parameters from the log header (``EarlyStopping.patience``), the
  header's meta (``meta.learning_rate``) and the loop's ``train_begin`` params (``epochs``);
- metrics: the ``epoch_end`` logs at step = epoch, under their own names; with ``batch_every``,
  the ``batch_end`` logs of every ``batch_every``-th batch as ``batch_<name>`` at step = batches
  done (TensorBoard's step). Two names that become one key keep a key each (:class:`_Keys`);
- decisions: one tag each, ``eventbus.decision.<cause seq>.<kind>.<source>``, whose value is the
  reason and the evidence (and the new rate of a learning-rate change);
- checkpoints: each ``checkpoint_saved`` file, as an artifact under ``checkpoints/``, if it
  passes the checks below;
- status: FINISHED once ``train_end`` is sent (a bus never closed included), at its time;
  FAILED at close after the bus's warning that its ``with`` block ended by an exception, as
  MLflow's ``start_run`` context leaves it; RUNNING again at a further fit or a resume; a
  crashed or interrupted run (Ctrl-C, SIGTERM: left as a kill leaves it) stays RUNNING. The
  run starts at the header's time;
- the tags ``eventbus.last_seq`` (the highest seq the MLflow run holds), ``eventbus.started``
  (the time of the header of the log it was written from) and ``eventbus.last_record`` (the
  last record, not a batch's, it holds: ``seq kind time``).

Exactly once. MLflow only appends (a metric logged twice at a step shows twice), so the sink
never sends anything twice: records at or below ``eventbus.last_seq`` are skipped, and a metric
already at a step in the MLflow run (read back when the sink finds the run) is not logged again,
unless a resume that went back over finished epochs made another value there (it follows the
abandoned one, with a warning: MLflow cannot delete a point).
It also sends only what a resume will not write again: the records of an epoch go to MLflow when
that epoch has ended (or the run has), never those of an epoch in progress, which a crash would
abandon and a resume run again with other values. A crash therefore leaves MLflow at most
behind the event log, and a resume (``catch_up``) or a backfill writes what it lacks.

A log is untrusted input (a backfill converts a log from anywhere; a resume reads one back), so
what it says decides neither which MLflow run is written nor which files are sent:

- The run id must be the bus's 16 hex digits or a name of ASCII letters, digits, ``.``, ``_``
  and ``-`` (up to 128, :func:`check_run_id`): anything else is a ConfigError naming
  ``run_id``, and nothing else reaches MLflow's search filter.
- An MLflow run found by its tag is written into (and set RUNNING again) only once the log has
  shown it goes on from it: it begins with the header whose time is the run's
  ``eventbus.started``, and holds the very record (seq, kind, time) of its
  ``eventbus.last_record``. Until then nothing is sent; a log that shows otherwise (another
  run's log carrying the same id, a log cut short or edited), a run with no
  ``eventbus.started`` (made by hand or by an older version), two runs with the id, or a run
  that is not resumed finding one when the sink opens, is a ConfigError naming ``run_id``, and
  that MLflow run is left as it was. A finished MLflow run is so reopened only by its own log
  going on (a further fit of a resumed run); a second backfill of that log adds nothing and
  leaves it FINISHED.
- A recorded checkpoint is uploaded only if it is a regular file (``lstat`` says so before it
  is opened, and ``fstat`` of what was opened, with ``O_NOFOLLOW | O_NONBLOCK``: a FIFO, device
  or directory is never opened, a link never followed), starts as a checkpoint does (HDF5 or a
  ``.keras`` zip, :func:`eventbus.verify.starts_as_checkpoint`), has the recorded size and
  sha256, and either this process's checkpoint writer wrote it, unchanged since (a live record
  only: :mod:`sinks.hdf5` notes each file it writes), or it is below the root, opened one
  folder at a time with no link followed below it: ``checkpoint_root``, else the folder of the
  log (a relative path is taken from the working directory, where training ran, when that
  leads below the root, else from the root). A file mostly holes is refused unread, and the
  bytes are hashed before they are copied. What is sent is a private copy (in a temporary
  folder of this process's own) of exactly the bytes that were hashed, read in chunks, no
  more than the file's size. Anything else is a ``warning`` naming the path and why (a
  :class:`~eventbus.RunWarning` in a backfill), listed on ``refused_checkpoints`` (a file
  that is gone: ``missing_checkpoints``), and is not sent; the rest of the run still is.

A store that fails or is slow costs no record and holds the loop briefly: a failed send is
kept and tried again at a later flush (said once, as a ``sink_failed``), and ``close`` tries
for ``eventbus.sink.CLOSE_RETRY_SECONDS`` before it says what was not sent. Each of the sink's
own HTTP requests waits at most :data:`REQUEST_TIMEOUT` and follows no redirect (a 3xx is a
failed send); the user's own MLflow calls keep MLflow's settings.

MLflow is imported when the sink first talks to the store, never by ``import sinks.mlflow``.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eventbus import RunWarning, Sink
from eventbus import sink as contract
from eventbus.checks import require_bool
from eventbus.confine import Refused
from eventbus.errors import ConfigError, LogCorruptError
from eventbus.records import DECISION_KINDS, SinkFailed
from eventbus.records import Warning as WarningRecord
from eventbus.terminal import printable
from sinks.mlflow_checkpoints import NotFound, checked_copy

if TYPE_CHECKING:
    from eventbus.run import Run

__all__ = ["LAST_RECORD_TAG", "REQUEST_RETRIES", "REQUEST_TIMEOUT", "RUN_ID_TAG", "SEQ_TAG",
           "STARTED_TAG", "UPLOAD_TIMEOUT", "MLflowSink", "backfill", "check_run_id"]

#: The tag an MLflow run carries the event log's run id in: how a resume finds it again.
RUN_ID_TAG = "eventbus.run_id"
#: The tag holding the highest seq the MLflow run has (records at or below it are skipped).
SEQ_TAG = "eventbus.last_seq"
#: The tag holding the time of the header of the log the MLflow run was written from.
STARTED_TAG = "eventbus.started"
#: The tag naming the last record (not a batch's) the MLflow run holds: ``seq kind time``.
LAST_RECORD_TAG = "eventbus.last_record"

_PARAM_LENGTH = 6000  # MLflow's limits on a param value, a tag value and a batch
_TAG_LENGTH = 8000
_PER_BATCH = 100
_METRICS_PER_BATCH = 1000
# What MLflow accepts in a metric, param or tag key; anything else becomes "_".
_KEY_BAD = re.compile(r"[^\w\-. /]")
# Batch logs that are the batch's description, not a metric (Keras's loggers leave them out).
_NOT_LOGGED = frozenset({"batch", "size"})
# A run id that may reach MLflow's search filter: the bus's 16 hex digits, or a name.
_RUN_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")

#: Each HTTP request the sink makes to a tracking server waits at most this many seconds for
#: the connection and for each answer (MLflow's own default, 120 s and 7 retries, held the
#: training loop for tens of minutes on a server that accepted and never answered); read at
#: each request. The user's own MLflow calls keep MLflow's settings.
REQUEST_TIMEOUT = 5.0
#: How many times such a request is tried again when the connection fails (not when a sent
#: request goes unanswered: that waited its timeout already).
REQUEST_RETRIES = 1
#: The wait for an answer to a checkpoint's upload (an artifact server may store a large file
#: elsewhere before it answers): MLflow's own default. No redirect is followed there either.
UPLOAD_TIMEOUT = 120.0
# Set while the sink's own calls run (the attribute of this module holding the wait they
# get): the bounds (and no redirect) apply to those alone.
_OWN_CALL: ContextVar[str | None] = ContextVar("eventbus_mlflow_own_call", default=None)
# After a failed try, the store is tried again no sooner than this many times what the try
# took (a slow store then costs the loop a tenth of its time at most), nor later than _HOLD_MAX.
_HOLD_FACTOR = 10.0
_HOLD_MAX = 300.0
# MLflow's answers that will not pass by trying again: the request itself is wrong (a param
# changed, the run deleted), so a failed send of one is final, not kept.
_FINAL_CODES = frozenset({"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "RESOURCE_DOES_NOT_EXIST",
                          "INVALID_STATE", "ENDPOINT_NOT_FOUND"})
# What the bus names a with-block ended by Ctrl-C or SIGTERM: left RUNNING, as a kill leaves
# a run (the logs are left as a kill leaves them; a resume goes on with it).
_INTERRUPTS = frozenset({"builtins.KeyboardInterrupt", "eventbus.termination.Terminated"})


def _key(name: str) -> str:
    """``name`` as a key MLflow takes: its characters (others become ``_``), at most 250 of
    them, and unchanged by ``posixpath.normpath`` (MLflow refuses ``val//loss``, ``acc/``,
    ``a/./b``: one such metric name made it refuse every metric of a flush)."""
    return _path_stable(_path_stable(_KEY_BAD.sub("_", name))[:249])


def _path_stable(text: str) -> str:
    return "/".join(part if part not in ("", ".", "..") else "_" * max(len(part), 1)
                    for part in text.split("/"))


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _require_positive_int(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"MLflowSink: {field} must be None or an int of 1 or more; got "
                          f"{value!r}", plugin="mlflow", field=field)
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_run_id(run_id: Any) -> str:
    """``run_id`` if it may name an MLflow run: the bus's 16 hex digits, or a name of ASCII
    letters, digits, ``.``, ``_`` and ``-`` (1 to 128 of them); else a ConfigError naming
    ``run_id``. Only such a value is put into MLflow's search filter."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise ConfigError(f"MLflowSink: the run id {_shown(run_id)} cannot name an MLflow run: "
                          "use letters, digits, '.', '_' and '-', at most 128 of them (the bus "
                          "makes 16 hex digits)", plugin="mlflow", field="run_id")
    return run_id


def _passing(exc: BaseException) -> bool:
    """Whether ``exc``, raised by a call to the store, may pass if tried again later: an
    MlflowException (a 5xx, a refused connection or a timeout past the retries, a locked
    database) but one for a request the store refuses as such, and requests' connection
    errors (OSError). A ConfigError (another log's run) is final."""
    if isinstance(exc, ConfigError):
        return False
    errors = sys.modules.get("mlflow.exceptions")
    if errors is not None and isinstance(exc, errors.MlflowException):
        return exc.error_code not in _FINAL_CODES
    return isinstance(exc, OSError)


def _bound_requests() -> None:
    """Make the sink's own HTTP requests bounded and never redirected: MLflow builds each
    request in ``rest_utils.http_request`` and reads its timeout and retries there, from the
    process's settings, so the one function it sends through is wrapped; only a call made
    while :data:`_OWN_CALL` is set (the sink's) gets :data:`REQUEST_TIMEOUT`, at most
    :data:`REQUEST_RETRIES` retries of a failed connection, and no redirect followed (a 3xx is
    a failed call: a server could send the request, its body and its token, to another
    host). Installed once; any other call goes through unchanged."""
    import inspect

    from mlflow.utils import rest_utils

    send = getattr(rest_utils, "_get_http_response_with_retries", None)
    if send is None or getattr(send, "_eventbus_bounded", False):
        return  # (an MLflow that sends otherwise: its own bounds, docs/sinks/mlflow.md)
    # An unanswered request is not sent again, where this MLflow can say so (3.x).
    once = {"retry_read_errors": False} if "retry_read_errors" in \
        inspect.signature(send).parameters else {}

    def bounded(method: str, url: str, max_retries: int, backoff_factor: float,
                *args: Any, **kwargs: Any) -> Any:
        own = _OWN_CALL.get()
        if own is None:
            return send(method, url, max_retries, backoff_factor, *args, **kwargs)
        kwargs.update(timeout=globals()[own], allow_redirects=False, **once)
        answer = send(method, url, min(max_retries, REQUEST_RETRIES),
                      min(backoff_factor, 0.5), *args, **kwargs)
        if 300 <= answer.status_code < 400:
            answer.close()
            raise OSError(f"the tracking server answered {answer.status_code} (a redirect): "
                          "not followed, nothing sent elsewhere")
        return answer

    bounded._eventbus_bounded = True  # type: ignore[attr-defined]
    rest_utils._get_http_response_with_retries = bounded


class _OwnCalls:
    """An MlflowClient whose every call is one of the sink's own (:func:`_bound_requests`)."""

    def __init__(self, client: Any):
        self._client = client

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not callable(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            # An upload waits longer for its answer than the calls of the training loop.
            token = _OWN_CALL.set("UPLOAD_TIMEOUT" if name.startswith("log_artifact")
                                  else "REQUEST_TIMEOUT")
            try:
                return method(*args, **kwargs)
            finally:
                _OWN_CALL.reset(token)
        return call


def _stamp(record: Mapping[str, Any]) -> str:
    """What :data:`LAST_RECORD_TAG` says of a record: its seq, kind and time (exact)."""
    return f"{record['seq']} {record['kind']} {float(record['time'])!r}"


class _Keys:
    """The MLflow key of each name of one namespace of a run (metrics, params or tags). Names
    that become one key (``recall@5`` and ``recall#5``, an epoch metric ``batch_loss`` and the
    batch metric ``loss``) would merge into one history, and one would be lost: the first name
    to make a key keeps it, a later one gets the first free suffix (``recall_5_2``). Keys are
    given in the order the log first shows the names, so a live run, its resume (``catch_up``
    replays the log) and a backfill give the same ones."""

    def __init__(self, what: str) -> None:
        self.what = what  # "metric", "param", "tag": how a warning names one
        self._of: dict[Any, str] = {}  # name -> its key
        self._owner: dict[str, Any] = {}  # key -> the name that has it

    def __call__(self, name: Any, text: str) -> tuple[str, Any]:
        """The key of ``name`` (``text`` is what it is called), given now if it has none; and
        the name that has the key ``text`` makes, if ``name`` was given another just now."""
        key = self._of.get(name)
        if key is not None:
            return key, None
        key = _key(text)
        taken_by = self._owner.get(key)
        if taken_by is not None:
            suffix = 2
            while (other := _key(f"{key[:249 - len(str(suffix)) - 1]}_{suffix}")) in self._owner:
                suffix += 1
            key = other
        self._of[name], self._owner[key] = key, name
        return key, taken_by

    def __getitem__(self, name: Any) -> str:
        return self._of[name]

    def called(self, name: Any) -> str:
        """How a warning names ``name``: a metric's is (prefix, the log's name)."""
        if isinstance(name, tuple):
            return f"{'batch ' if name[0] else ''}{self.what} {name[1]!r}"
        return f"{self.what} {name!r}"


@dataclass
class _Claim:
    """An MLflow run found by its run-id tag that this log has not yet shown it goes on from:
    what the run holds, and what of it the log has shown so far."""

    started: str
    last: str | None
    last_seq: int | None
    header_seen: bool = False
    last_seen: bool = False


class MLflowSink(Sink):
    """Write a run into an MLflow tracking store (see the module documentation).

    ``tracking_uri``: the store (``sqlite:///mlflow.db``, ``http://127.0.0.1:5000``, a
    ``file:`` URI); None: MLflow's own default (``MLFLOW_TRACKING_URI``). ``experiment``: the
    experiment's name, made if missing. ``batch_every``: log batch metrics every that many
    steps (None: epoch metrics only). ``run_name``: the MLflow run's name (default: the event
    log's run id). ``checkpoints``: upload ``checkpoint_saved`` files as artifacts.
    ``checkpoint_root``: the folder a recorded checkpoint this process did not write must be
    under to be uploaded (a relative path is taken from the working directory when that
    leads below it, else from it); None: the folder of the log.
    """

    name = "mlflow"
    #: Flushed only once every log has written what it holds (a log keeping records through a
    #: full disk holds MLflow back): what MLflow has is never ahead of the log a resume reads.
    follows_logs = True

    def __init__(self, tracking_uri: str | None = None, *, experiment: str = "eventbus",
                 batch_every: int | None = None, run_name: str | None = None,
                 checkpoints: bool = True,
                 checkpoint_root: str | os.PathLike[str] | None = None):
        if tracking_uri is not None and (not isinstance(tracking_uri, str) or not tracking_uri):
            raise ConfigError(f"MLflowSink: tracking_uri must be None or a non-empty str; got "
                              f"{tracking_uri!r}", plugin=self.name, field="tracking_uri")
        if not isinstance(experiment, str) or not experiment:
            raise ConfigError(f"MLflowSink: experiment must be a non-empty str; got "
                              f"{experiment!r}", plugin=self.name, field="experiment")
        if run_name is not None and not isinstance(run_name, str):
            raise ConfigError(f"MLflowSink: run_name must be None or a str; got {run_name!r}",
                              plugin=self.name, field="run_name")
        if checkpoint_root is not None and (
                not isinstance(checkpoint_root, (str, os.PathLike))
                or not os.fspath(checkpoint_root) or "\0" in str(os.fspath(checkpoint_root))):
            raise ConfigError(f"MLflowSink: checkpoint_root must be None or a folder's path; "
                              f"got {checkpoint_root!r}", plugin=self.name,
                              field="checkpoint_root")
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.batch_every = _require_positive_int(batch_every, "batch_every")
        self.run_name = run_name
        # Not bool(): checkpoints="false" would turn uploads on.
        self.checkpoints = require_bool(checkpoints, "checkpoints", self.name)
        #: The folder recorded checkpoints must be under (absolute), or None: the log's.
        self.checkpoint_root = None if checkpoint_root is None else \
            os.path.abspath(os.fspath(checkpoint_root))
        takes = {"header", "train_begin", "epoch_end", "train_end", "checkpoint_saved",
                 "warning", "resumed", *DECISION_KINDS}
        if self.batch_every is not None:
            takes.add("batch_end")
        self.takes = frozenset(takes)
        self._run: Run | None = None
        self._client: Any = None
        self._experiment_id: str | None = None
        self._run_key = ""  # the event log's run id, checked
        #: The MLflow run's id, once found or made.
        self.mlflow_run_id: str | None = None
        self._status: str | None = None  # the MLflow run's status, as this sink left it
        self._last_seq = -1  # what the MLflow run holds
        self._have: dict[str, set[int]] = {}  # metric key -> steps it has
        #: Metric key -> the steps of the log's records a resume keeps (``catch_up``): a step
        #: the MLflow run has beyond these is of epochs the resume runs again.
        self._kept_steps: dict[str, set[int]] = {}
        #: Metric key -> step -> the value MLflow shows there, for a found MLflow run.
        self._shown: dict[str, dict[int, float]] = {}
        #: Metric key -> the steps of epochs a resume runs again that MLflow holds (see
        #: :meth:`_rerun_steps`), with the value it shows.
        self._rerun: dict[str, dict[int, float]] = {}
        self._params: set[str] = set()
        self._tags: set[str] = set()
        # Each name's key, per namespace (epoch and batch metrics share one: MLflow has one).
        self._metric_keys = _Keys("metric")
        self._param_keys, self._tag_keys = _Keys("param"), _Keys("tag")
        # A found MLflow run the log has not yet shown it goes on from; nothing is sent to it,
        # nor its status changed, until it has.
        self._claim: _Claim | None = None
        self._refusal: ConfigError | None = None  # why this log is not written, once known
        # What this sink saw and wrote: the header's time, the last LAST_RECORD_TAG it set.
        # A second fit after close finds the MLflow run holding just these.
        self._started: str | None = None
        self._last_record: str | None = None
        # The header (seq and time): when the MLflow run began, as the log says; a backfill
        # made long after the run is not "now". (It ends at the train_end sent.)
        self._header_time: dict[str, Any] | None = None
        # The bus's warning that its with-block ended by an exception: the status the MLflow
        # run is left in at close (FAILED; an interrupt leaves it RUNNING), and the record.
        self._failed: tuple[str, dict[str, Any]] | None = None
        self._log_folders: list[str] = []  # the default checkpoint root(s)
        # Records taken but not sent: (epoch it belongs to, or None, record, live).
        self._pending: list[tuple[int | None, dict[str, Any], bool]] = []
        self._ended_epoch = -1  # the last epoch whose epoch_end was taken
        self._ended = False  # train_end taken: everything may go
        # The event log's run id to find the MLflow run of, once known; while the store fails,
        # the records taken (and the bus's open) wait in the backlog, replayed once it answers.
        self._wanted: str | None = None
        self._backlog: list[tuple[str, dict[str, Any] | None]] = []
        self._forget_backlog = False  # the logs could not write it all: replay, send none of it
        self._fault: BaseException | None = None  # the store failing: reported once per spell
        self._out = False  # a send failed for good: close sends nothing more
        self._retry_at = 0.0  # while the store fails: when a flush tries it again
        #: Checkpoint paths that were gone when their record was sent.
        self.missing_checkpoints: list[str] = []
        #: Checkpoints not uploaded, and why: (path as recorded, reason in words).
        self.refused_checkpoints: list[tuple[str, str]] = []

    # --- the store -----------------------------------------------------------------------------

    def _connect(self, run_id: str) -> None:
        """Find the MLflow run of ``run_id`` and read what it holds (nothing is written: the
        log must first show it goes on from that run), or note that none is there yet (it
        is made at the first send, when the log's header is known)."""
        if self._client is not None:
            return
        try:
            run_id = check_run_id(run_id)
        except ConfigError as exc:
            self._refusal = exc
            raise
        from mlflow.tracking import MlflowClient

        _bound_requests()
        client = _OwnCalls(MlflowClient(self.tracking_uri))
        experiment = client.get_experiment_by_name(self.experiment)
        experiment_id = experiment.experiment_id if experiment is not None else \
            client.create_experiment(self.experiment)
        found = client.search_runs([experiment_id],
                                   filter_string=f"tags.`{RUN_ID_TAG}` = '{run_id}'",
                                   max_results=2)
        self._run_key, self._experiment_id = run_id, experiment_id
        if len(found) > 1:
            raise ConfigError(f"MLflowSink: more than one MLflow run in experiment "
                              f"{self.experiment!r} carries the run id {run_id}; nothing tells "
                              "which this log goes on from, so none is written",
                              plugin=self.name, field="run_id")
        if found:
            run = found[0]
            self.mlflow_run_id = run.info.run_id
            data = run.data
            self._claim = self._claim_of(data.tags)
            self._last_seq = int(data.tags.get(SEQ_TAG, -1))
            self._params = set(data.params)
            self._tags = set(data.tags)
            for key in data.metrics:
                shown: dict[int, tuple[int, float]] = {}  # step -> (time, value): MLflow's
                for m in client.get_metric_history(self.mlflow_run_id, key):
                    if m.step not in shown or m.timestamp >= shown[m.step][0]:
                        shown[m.step] = (m.timestamp, m.value)
                self._have[key] = set(shown)
                self._shown[key] = {step: value for step, (_, value) in shown.items()}
            self._status = run.info.status
        else:
            self.mlflow_run_id = None
        self._client = client

    def _claim_of(self, tags: Mapping[str, str]) -> _Claim | None:
        """What a found MLflow run holds that the log must show; None when this very sink
        wrote it so (a second fit after ``close``)."""
        started, last = tags.get(STARTED_TAG), tags.get(LAST_RECORD_TAG)
        if started is None:
            raise self._not_continued(
                f"it has no tag {STARTED_TAG} (it was not written by this sink, or by a "
                "version before it checked), so nothing shows this log goes on from it")
        if self._started == started and self._last_record == last:
            return None
        last_seq = None
        if last is not None:
            head = last.partition(" ")[0]
            if not (head.isascii() and head.isdigit()):  # "²" is a digit to isdigit()
                raise self._not_continued(f"its tag {LAST_RECORD_TAG} ({_shown(last)}) is "
                                          "not one this sink writes")
            last_seq = int(head)
        return _Claim(started=started, last=last, last_seq=last_seq)

    def _not_continued(self, why: str) -> ConfigError:
        self._refusal = ConfigError(
            f"MLflowSink: the MLflow run {self.mlflow_run_id} (experiment "
            f"{self.experiment!r}) carries the run id {self._run_key}, but this log does not "
            f"go on from it: {why}. That run is left as it is; write this log to another "
            "experiment", plugin=self.name, field="run_id")
        return self._refusal

    def _witness(self, record: Mapping[str, Any]) -> None:
        """Check one record, in the log's order, against what a found MLflow run holds: its
        header first, then the record it last got. Once both are shown, it may be written."""
        kind = record["kind"]
        if kind == "header" and self._started is None:
            self._started = repr(float(record["time"]))
            self._header_time = {"seq": record["seq"], "time": record["time"]}
        claim = self._claim
        if claim is None:
            return
        if not claim.header_seen:
            if kind != "header" or repr(float(record["time"])) != claim.started:
                raise self._not_continued("its header is not the one the MLflow run was "
                                          f"written from (time {claim.started})")
            claim.header_seen = True
        if claim.last_seq is not None and not claim.last_seen:
            seq = record["seq"]
            if seq == claim.last_seq:
                if _stamp(record) != claim.last:
                    raise self._not_continued(f"its record {seq} is not the one the MLflow "
                                              f"run holds ({claim.last})")
                claim.last_seen = True
            elif seq > claim.last_seq:
                if not self._held_by_the_log(claim):
                    raise self._not_continued(f"it has no record {claim.last} as the MLflow "
                                              "run holds")
                claim.last_seen = True
        if claim.last_seq is None or claim.last_seen:
            self._claim = None  # shown: the log goes on from that run

    def _held_by_the_log(self, claim: _Claim) -> bool:
        """Whether a resumed run's log holds the record the MLflow run last got, past the point
        the run goes on from: a resume that steps back (a damaged backup) abandons records the
        sink sent before the crash, and catch-up never shows them."""
        run = self._run
        if run is None or not run.resumed:
            return False
        from eventbus.log import read_log

        for path in run.logs:
            try:
                for record in read_log(path):
                    if record.seq == claim.last_seq:
                        return _stamp(record.model_dump()) == claim.last
                    if record.seq > claim.last_seq:
                        break
            except (OSError, ValueError):  # a log that cannot be read shows nothing
                continue
        return False

    def _checkpoint_roots(self) -> list[str]:
        return [self.checkpoint_root] if self.checkpoint_root is not None else \
            self._log_folders

    def _note_run(self, run: Run) -> None:
        self._run = run
        if not self._log_folders:
            self._log_folders = list(dict.fromkeys(
                os.path.dirname(os.path.abspath(log)) for log in run.logs))

    # --- the sink ------------------------------------------------------------------------------

    def open(self, run: Run) -> None:
        """Find the MLflow run (see ``_connect``). A run not resumed starts a log of its own,
        which goes on from no MLflow run: one found by its id is refused here, at the start."""
        self._note_run(run)
        self._wanted = run.run_id
        if not self._reached():
            self._backlog.append(("open", None))
            return
        self._opened(run)

    def _opened(self, run: Run) -> None:
        if self._claim is not None and not run.resumed:
            raise self._not_continued("this run is not resumed from the log that run was "
                                      "written from; it starts a log of its own")
        if run.resumed:
            self._rerun_steps(run)

    def _rerun_steps(self, run: Run) -> None:
        """The steps the MLflow run holds of epochs the resume runs again: a resume that goes
        on at an earlier epoch than the log's last (``resume_at_most``, a damaged backup, ranks
        agreeing on an earlier epoch) abandons finished epochs MLflow has. A rerun's value
        that differs is logged at its step (see :meth:`_send`)."""
        for key, steps in self._have.items():
            stale = steps - self._kept_steps.get(key, set())
            if stale:
                steps -= stale
                shown = self._shown.get(key, {})
                self._rerun[key] = {step: shown.get(step, math.nan) for step in stale}

    def catch_up(self, record: dict[str, Any], run: Run) -> None:
        """On resume, before ``open``: a record of the run so far; what the MLflow run lacks of
        it is sent at the next flush (a crash can end the run before this sink's flush)."""
        self._note_run(run)
        self._wanted = run.run_id
        if not self._reached():
            self._backlog.append(("catch_up", record))
            return
        self._caught_up(record)

    def _caught_up(self, record: dict[str, Any]) -> None:
        self._take(record, settled=True)
        for key, step, _ in self._points(record):
            self._kept_steps.setdefault(key, set()).add(step)

    def write(self, record: dict[str, Any]) -> Any:
        if self._refusal is not None:  # said at open; the bus writes on (its close, say)
            raise self._refusal
        # A batch batch_every passes over is never sent: neither kept while the store is down
        # nor keyed (keys follow the names of what is sent, in the log's order).
        if record["kind"] == "batch_end" and (record["step"] + 1) % self.batch_every:  # type: ignore[operator]
            return None
        if self._run is None and self._client is None:  # a bus never opened: convert
            self._connect(record["run_id"])
        elif not self._reached():
            self._backlog.append(("write", record))
            return None
        # Live when opened by its bus: a checkpoint it names may be one this process wrote.
        self._take(record, settled=False, live=self._run is not None)
        return None

    def _take(self, record: dict[str, Any], *, settled: bool, live: bool = False) -> None:
        if self._refusal is not None:
            raise self._refusal
        if record["kind"] == "batch_end" and (record["step"] + 1) % self.batch_every:  # type: ignore[operator]
            return  # never sent (see write)
        self._witness(record)
        # Before anything is skipped: the keys follow every name the log shows, in its order.
        self._name(record, say=not settled)
        if record["seq"] <= self._last_seq:
            return
        kind = record["kind"]
        if kind == "warning":  # nothing of it is sent; only how the run ended is kept
            if not settled:
                self._failed = _failure(record) or self._failed
            return
        if kind == "resumed":  # the run went on: what ended an attempt did not end it
            self._failed = None
            return
        if kind == "train_begin":
            if not settled:
                self._failed = None  # a further fit of the bus: its own ending counts
            # A further fit's epochs are held until they end, as the first fit's were (its
            # epochs may count from 0 again); what an earlier fit left unsent may go at once.
            self._ended, self._ended_epoch = False, -1
            self._pending = [(None, held, was_live) for _, held, was_live in self._pending]
        # Everything of a recorded run before the point it resumes from is settled.
        epoch = None if settled else record.get("epoch")
        self._pending.append((epoch, record, live))
        if kind == "epoch_end" and not settled:
            self._ended_epoch = max(self._ended_epoch, record["epoch"])
        elif kind == "train_end":
            self._ended = True

    def _reached(self) -> bool:
        """Whether the store has been reached (the MLflow run found, or known to be missing).
        While it fails, only a flush tries it again: one try per record would hold the loop."""
        if self._client is not None:
            return True
        if self._fault is not None:
            return False
        began = time.monotonic()
        try:
            self._connect(self._wanted)  # type: ignore[arg-type]
        except Exception as exc:
            if not _passing(exc):
                raise
            self._failing(exc, "open", began)
            return False
        return True

    def _replay(self) -> None:
        """The store answers again: take what waited for it, in order."""
        while self._backlog:
            how, record = self._backlog.pop(0)
            if how == "open":
                self._opened(self._run)  # type: ignore[arg-type]
            elif how == "catch_up":
                self._caught_up(record)  # type: ignore[arg-type]
            else:
                self._take(record, settled=False, live=True)  # type: ignore[arg-type]
        if self._forget_backlog:
            self._forget_backlog = False
            self._pending.clear()

    def _failing(self, exc: BaseException, event: str, began: float) -> None:
        """A call to the store failed and may pass: what was not sent is kept, and tried again
        at a later flush, once ``_HOLD_FACTOR`` times what this try took has passed (at once
        for a store that refused at once). Said once per spell, as a ``sink_failed`` (the logs
        hold it)."""
        now = time.monotonic()
        self._retry_at = now + min(_HOLD_FACTOR * (now - began), _HOLD_MAX)
        if self._fault is not None:
            return
        self._fault = exc
        if self._run is not None:
            self._run.report(SinkFailed(
                sink=self.name, event=event, error=type(exc).__name__,
                message=f"{printable(str(exc))[:500]}; the records not sent are kept, sent at "
                        "the next flush the store answers"))

    def flush(self) -> None:
        """Send what a resume will not write again: everything but the records of an epoch
        still in progress (all of it once the run has ended). A store that fails (see
        :func:`_passing`) keeps them for the next flush."""
        if self._fault is not None and time.monotonic() < self._retry_at:
            return  # a slow store is not asked at every flush: it would hold the loop
        began = time.monotonic()
        try:
            self._push()
        except Exception as exc:
            if not _passing(exc):
                self._out = True  # the bus closes the sink: nothing more is sent
                raise
            self._failing(exc, "flush", began)
        else:
            self._fault = None

    def _push(self) -> None:
        """:meth:`flush`, raising what the store raised; what was not sent stays pending."""
        if self._refusal is not None or self._wanted is None and self._client is None:
            return
        if self._client is None:
            self._connect(self._wanted)  # type: ignore[arg-type]
        self._replay()
        if not self._pending:
            return
        if self._ended:
            ready, self._pending = self._pending, []
        else:
            ready = [p for p in self._pending if p[0] is None or p[0] <= self._ended_epoch]
            self._pending = [p for p in self._pending
                             if not (p[0] is None or p[0] <= self._ended_epoch)]
        if ready:
            try:
                self._send([(record, live) for _, record, live in ready])
            except BaseException:
                self._pending[:0] = ready  # kept, at the head: sent again in the log's order
                raise

    def forget_unflushed(self) -> None:
        """Drop what is not sent yet: the logs could not write it (a full disk at close) or an
        interrupt cut its way to them; a resume sends it, from the log, when it is there."""
        self._pending.clear()
        # What waits for the store is still read (the header names the MLflow run), not sent.
        self._forget_backlog = bool(self._backlog)

    def _open_run(self) -> None:
        """Before the first send: the MLflow run made (tagged with the run id and the log's
        header), or a found one, shown to be this log's, set RUNNING again if it was not."""
        client = self._client
        if self._claim is not None:
            raise self._not_continued(f"the log has not shown the record the MLflow run holds "
                                      f"({self._claim.last}) before its records to send")
        if self.mlflow_run_id is None:
            tags = {RUN_ID_TAG: self._run_key}
            if self._started is not None:
                tags[STARTED_TAG] = self._started
            start = None if self._header_time is None else _millis(self._header_time)
            made = client.create_run(self._experiment_id, start_time=start,
                                     run_name=self.run_name or self._run_key, tags=tags)
            self.mlflow_run_id, self._status = made.info.run_id, "RUNNING"
            self._tags.update(tags)
        elif self._status != "RUNNING":  # a resume after a failure, a further fit, a backfill
            client.update_run(self.mlflow_run_id, status="RUNNING")
            self._status = "RUNNING"

    def _send(self, taken: list[tuple[dict[str, Any], bool]]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        self._open_run()
        records = [record for record, _ in taken]
        metrics: list[Any] = []
        params: dict[str, str] = {}
        tags: dict[str, str] = {}
        files: dict[str, tuple[dict[str, Any], bool]] = {}  # path -> its newest save
        rerun: dict[str, list[int]] = {}  # key -> steps MLflow had another value at
        # The steps marked sent below, and the rerun values taken for them: given back if their
        # batch fails, so a send tried again logs them (and only them) then.
        marked: list[tuple[str, int, float | None]] = []
        for record, live in taken:
            kind = record["kind"]
            if kind in ("header", "train_begin"):
                params.update({self._param_keys[name]: value
                               for name, value in _params_of(record).items()})
            elif kind in ("epoch_end", "batch_end"):
                stamp = _millis(record)
                for key, step, value in self._points(record):
                    steps = self._have.setdefault(key, set())
                    if step in steps:
                        continue
                    steps.add(step)
                    was = self._rerun.get(key, {}).pop(step, None)
                    if was is not None and (was == value or math.isnan(was) and
                                            math.isnan(value)):
                        continue  # the rerun made the value MLflow has: nothing to add
                    if was is not None:
                        rerun.setdefault(key, []).append(step)
                    marked.append((key, step, was))
                    metrics.append(Metric(key, value, stamp, step))
            elif kind in DECISION_KINDS:
                name, value = _decision_tag(record)
                key = self._tag_keys[name]
                if key not in self._tags:
                    tags[key] = value
            elif kind == "checkpoint_saved" and self.checkpoints:
                # An older save at the same path was overwritten by the newer one.
                files.pop(record["path"], None)
                files[record["path"]] = (record, live)
        params = {k: v for k, v in params.items() if k not in self._params}
        client, run_id = self._client, self.mlflow_run_id
        sent = 0
        try:
            for sent in range(0, len(metrics), _METRICS_PER_BATCH):
                client.log_batch(run_id, metrics=metrics[sent:sent + _METRICS_PER_BATCH])
            sent = len(metrics)
        except BaseException:
            for key, step, was in marked[sent:]:
                self._have[key].discard(step)
                if was is not None:
                    self._rerun.setdefault(key, {})[step] = was
            raise
        items = list(params.items())
        for i in range(0, len(items), _PER_BATCH):
            client.log_batch(run_id, params=[Param(k, v) for k, v in items[i:i + _PER_BATCH]])
        self._params.update(params)
        for record, live in files.values():
            self._upload(record, live=live)
        # The seq last: a crash before it sends these records again, and what they hold
        # already (metrics at their steps, params, tags) is then skipped. The last record
        # other than a batch's with it: what a log going on from this run must hold (a batch
        # record may be of a kind a later sink or backfill does not take).
        tags[SEQ_TAG] = str(max(r["seq"] for r in records))
        last = max((r for r in records if r["kind"] != "batch_end"), key=lambda r: r["seq"],
                   default=None)
        if last is not None:
            tags[LAST_RECORD_TAG] = _stamp(last)
        items = list(tags.items())
        for i in range(0, len(items), _PER_BATCH):
            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in items[i:i + _PER_BATCH]])
        self._tags.update(tags)
        self._last_seq = max(self._last_seq, int(tags[SEQ_TAG]))
        self._last_record = tags.get(LAST_RECORD_TAG, self._last_record)
        # FINISHED as soon as train_end is sent, not at close: a bus never closed (a script
        # that ends after train_end) left the run RUNNING. A later fit sets it RUNNING again.
        ends = [record for record in records if record["kind"] in ("train_begin", "train_end")]
        if ends and ends[-1]["kind"] == "train_end":
            client.set_terminated(run_id, status="FINISHED", end_time=_millis(ends[-1]))
            self._status = "FINISHED"
        if rerun and self._run is not None:
            # MLflow cannot delete a metric's points: the abandoned value stays in the
            # history, the rerun's after it, which is the one MLflow shows at that step.
            self._run.report(WarningRecord(
                source=self.name, message=f"{self.name}: this resume ran again epochs the "
                f"MLflow run {self.mlflow_run_id} held, with other values; MLflow cannot delete "
                "metric points, so the history of " + ", ".join(sorted(rerun)[:5])
                + (" and others" if len(rerun) > 5 else "") + " keeps the abandoned value at "
                "steps " + ", ".join(map(str, sorted({s for v in rerun.values() for s in v})[:10]))
                + ", each followed by the rerun's, the value MLflow shows",
                details={"steps": {k: v[:20] for k, v in sorted(rerun.items())[:20]}}))

    def _points(self, record: Mapping[str, Any]) -> list[tuple[str, int, float]]:
        """The metric points an ``epoch_end`` or ``batch_end`` record makes: (key, step,
        value), its names keyed already (:meth:`_name`)."""
        return [(self._metric_keys[name], step, value)
                for name, _, step, value in _metrics_of(record)]

    def _name(self, record: Mapping[str, Any], *, say: bool) -> None:
        """Key the names ``record`` brings (see :class:`_Keys`); with ``say``, a name that gets
        another key than its own is a warning, once, where the log first shows it (a resume's
        catch-up does not say it again: the log holds it)."""
        kind = record["kind"]
        if kind in ("epoch_end", "batch_end"):
            keys = self._metric_keys
            named = [(name, text) for name, text, _, _ in _metrics_of(record)]
        elif kind in ("header", "train_begin"):
            keys, named = self._param_keys, [(name, name) for name in _params_of(record)]
        elif kind in DECISION_KINDS:
            keys, name = self._tag_keys, _decision_tag(record)[0]
            named = [(name, name)]
        else:
            return
        for name, text in named:
            key, taken_by = keys(name, text)
            if taken_by is not None and say:
                self._say(f"mlflow: {keys.called(name)} is sent to MLflow as {key!r}: "
                          f"{_key(text)!r} is {keys.called(taken_by)}",
                          {"name": keys.called(name), "key": key,
                           "other": keys.called(taken_by)})

    # --- checkpoints: a log's paths are only claims ----------------------------------------

    def _upload(self, record: Mapping[str, Any], *, live: bool) -> None:
        """Upload the checkpoint ``record`` names, as a private copy of the bytes checked, if
        it passes every check of the module documentation; else say why, and go on."""
        path = record["path"]
        with tempfile.TemporaryDirectory(prefix="eventbus-mlflow-") as private:
            try:
                copy = checked_copy(record, self._checkpoint_roots(), live=live, into=private)
            except NotFound as gone:
                # Removed since (a backfill long after the run, a checkpoint kept only at best),
                # or a relative path recorded from a folder that is neither this process's
                # working directory nor the root.
                self.missing_checkpoints.append(path)
                why = "is gone" if os.path.isabs(path) else \
                    "is not at " + " nor at ".join(gone.looked)
                hint = "" if os.path.isabs(path) else \
                    " (pass the folder training ran in as --checkpoint-root DIR)" \
                    if self._run is None else " (give checkpoint_root the folder training ran in)"
                self._warn(f"mlflow: checkpoint {path} {why}; not uploaded{hint}", path, why)
                return
            except Refused as refused:
                self.refused_checkpoints.append((path, refused.why))
                self._warn(f"mlflow: checkpoint {path} {refused.why}; not uploaded", path,
                           refused.why)
                return
            self._client.log_artifact(self.mlflow_run_id, copy, "checkpoints")

    def _warn(self, message: str, path: str, why: str) -> None:
        self._say(message, {"path": path, "why": why})

    def _say(self, message: str, details: dict[str, Any]) -> None:
        if self._run is not None:
            self._run.report(WarningRecord(source=self.name, message=message, details=details))
        else:  # a backfill: no run to record it in; the command line shows it as a line
            warnings.warn(printable(message), RunWarning, stacklevel=5)

    def close(self) -> Any:
        if self._out or self._client is None and (self._wanted is None or
                                                  self._refusal is not None):
            self._client = None
            return None
        # What a failing store kept is tried again for a while (as the logs do), then given up.
        deadline = time.monotonic() + contract.CLOSE_RETRY_SECONDS
        wait = 0.05
        try:
            while True:
                try:
                    self._closing()
                    return None
                except Exception as exc:
                    left = deadline - time.monotonic()
                    if not _passing(exc):
                        raise
                    if left <= 0:
                        raise self._given_up(exc) from exc
                    time.sleep(min(wait, left))
                    wait = min(wait * 2, 0.8)
        finally:
            # A further fit starts afresh: it tries the store at once, and says a fault again.
            self._client, self._backlog = None, []
            self._fault, self._retry_at = None, 0.0

    def _closing(self) -> None:
        if self._client is None:
            self._connect(self._wanted)  # type: ignore[arg-type]
        self._replay()
        if self._refusal is None and self._claim is None:
            self._push()
            # A with-block ended by an exception: FAILED, as MLflow's own start_run context
            # leaves it; a resume sets it RUNNING again.
            if self._failed is not None and self.mlflow_run_id is not None and \
                    self._status != self._failed[0]:
                status, record = self._failed
                self._client.set_terminated(self.mlflow_run_id, status=status,
                                            end_time=_millis(record))
                self._status = status
        # Else the run stays as it is: FINISHED once train_end was sent, RUNNING as a crashed
        # one is (a resume goes on with it), or untouched when this log was not shown to go on
        # from it.

    def _given_up(self, exc: BaseException) -> OSError:
        lost = len(self._pending) + len(self._backlog)
        return OSError(f"mlflow: {lost} record(s) of run {self._wanted} were not sent to the "
                       f"MLflow store {self.tracking_uri or '(MLflow default)'} (tried again at "
                       f"close): {type(exc).__name__}: {printable(str(exc))[:500]}; a resume "
                       "or `eventbus convert LOG URI --to mlflow` sends them from the log")


def _failure(record: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The status a bus's warning that its with-block ended by an exception leaves the MLflow
    run in, with the record's seq and time; None for any other warning."""
    details = record.get("details")
    raised = details.get("raised") if isinstance(details, Mapping) else None
    if record.get("source") != "bus" or not isinstance(raised, str):
        return None
    if raised in _INTERRUPTS:
        return None
    return "FAILED", {"seq": record["seq"], "time": record["time"]}


def _metrics_of(record: Mapping[str, Any]) -> list[tuple[tuple[str, str], str, int, float]]:
    """The metrics an ``epoch_end`` or ``batch_end`` record holds: (name, what it is called in
    MLflow before it is keyed, step, value), a name being (prefix, the log's name): an epoch
    metric ``batch_loss`` is not the batch metric ``loss``. A batch's step is the batches done,
    as in TensorBoard."""
    kind = record["kind"]
    if kind == "epoch_end":
        step, prefix = record["epoch"], ""
    elif kind == "batch_end":
        step, prefix = record["step"] + 1, "batch_"
    else:
        return []
    return [((prefix, name), prefix + name, step, float(value))
            for name, value in record["logs"].items()
            if not (prefix and name in _NOT_LOGGED) and isinstance(value, (int, float))]


def _params_of(record: Mapping[str, Any]) -> dict[str, str]:
    """The params a header (every plugin's, and its meta) or a ``train_begin`` holds, by name
    (before it is keyed), with their values as text."""
    if record["kind"] == "train_begin":
        return {name: _text(value, _PARAM_LENGTH)
                for name, value in (record.get("params") or {}).items() if value is not None}
    out = {}
    for spec in record.get("plugins") or ():
        label = spec.get("label") or spec["name"]
        for name, value in (spec.get("params") or {}).items():
            out[f"{label}.{name}"] = _text(value, _PARAM_LENGTH)
    for name, value in (record.get("meta") or {}).items():
        out[f"meta.{name}"] = _text(value, _PARAM_LENGTH)
    return out


def _decision_tag(record: Mapping[str, Any]) -> tuple[str, str]:
    """The tag of one decision, by name (before it is keyed). Named after the event that
    caused it, so a decision a crash kept out of the log, made again on resume with a new seq,
    lands on the same tag."""
    cause = record.get("cause_seq")
    name = (f"eventbus.decision.{cause if cause is not None else record['seq']}."
            f"{record['kind']}.{record.get('source') or 'bus'}")
    parts = [f"epoch {record.get('epoch')}: {record.get('reason', '')}"]
    if record.get("value") is not None:
        parts.append(f"learning rate {record.get('previous')} -> {record['value']}")
    if record.get("path"):
        parts.append(f"path {record['path']}")
    if record.get("evidence"):
        parts.append("evidence " + json.dumps(record["evidence"], sort_keys=True, default=str))
    return name, _text("; ".join(parts), _TAG_LENGTH)


def backfill(log: str | os.PathLike[str], tracking_uri: str | None = None, *,
             experiment: str = "eventbus", batch_every: int | None = None,
             checkpoints: bool = True,
             checkpoint_root: str | os.PathLike[str] | None = None) -> int:
    """Write the run in ``log`` (finished or crashed) into MLflow; returns the records read
    (those of the kinds the sink takes).

    The run as it went on (a resumed run's abandoned partial epochs left out) is sent as the
    live sink sends it: a crashed run's epochs up to its last whole one (the resume runs the
    partial one again), a finished run whole. Nothing the MLflow run holds already is sent
    again, so a second backfill, or one after the live sink wrote part of the run, adds
    nothing. A crashed run's MLflow run stays RUNNING.

    The log is untrusted: an MLflow run of its run id is written only if the log goes on from
    it (else a ConfigError naming ``run_id``, that run left as it was), and a checkpoint it
    names is uploaded only from below ``checkpoint_root`` (default: the log's folder), with
    the recorded size and sha256; any other is a :class:`~eventbus.RunWarning` naming it and
    why, and the rest of the run is still written.
    """
    from eventbus.effective import read_effective

    if not Path(log).exists():
        raise ConfigError(f"convert: {os.fspath(log)}: no such log", field="log")
    sink = MLflowSink(tracking_uri, experiment=experiment, batch_every=batch_every,
                      checkpoints=checkpoints, checkpoint_root=checkpoint_root)
    sink._log_folders = [os.path.dirname(os.path.abspath(log))]
    count = 0
    try:
        for item in read_effective(log, kinds=sink.takes):
            count += 1
            record = item.model_dump()
            if sink._client is None:
                sink._connect(record["run_id"])
            # The live rule: a crashed run's last, partial epoch is held back, since a resume
            # runs it again.
            sink._take(record, settled=False)
        if sink._claim is not None:  # the log ended before showing it goes on from that run
            raise sink._not_continued(f"it ends before the record the MLflow run holds "
                                      f"({sink._claim.last})" if sink._claim.header_seen
                                      else "it has no header")
        sink.flush()
    finally:
        sink.close()
    return count


def _millis(record: Mapping[str, Any]) -> int:
    """The record's time as MLflow's timestamp, milliseconds in 64 bits; a time no run has
    (a log's, written by anyone: 1e308) is the log's error, naming the field and record."""
    stamp = record["time"] * 1000
    if not -(2**63) < stamp < 2**63:
        raise LogCorruptError(f"record seq {record['seq']}: time {record['time']!r} is no time "
                              "MLflow can hold (milliseconds since 1970 in 64 bits)",
                              field="time")
    return int(stamp)
