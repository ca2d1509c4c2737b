"""MLflow: a run's parameters, metrics, decisions and checkpoints in an MLflow tracking store.

    bus = Bus(plugins, log=["runs/x.jsonl", MLflowSink("sqlite:///mlflow.db")])

One event-log run is one MLflow run, found again by its tag ``eventbus.run_id``: a resumed run
and a backfill (:func:`backfill`, ``eventbus convert LOG URI --to mlflow``) write into the MLflow
run the first attempt made. What goes where:

- params: every plugin's parameters from the log header (``EarlyStopping.patience``), the
  header's meta (``meta.learning_rate``) and the loop's ``train_begin`` params (``epochs``);
- metrics: the ``epoch_end`` logs at step = epoch, under their own names; with ``batch_every``,
  the ``batch_end`` logs of every ``batch_every``-th batch as ``batch_<name>`` at step = batches
  done (TensorBoard's step);
- decisions: one tag each, ``eventbus.decision.<cause seq>.<kind>.<source>``, whose value is the
  reason and the evidence (and the new rate of a learning-rate change);
- checkpoints: each ``checkpoint_saved`` file (or directory) as an artifact under
  ``checkpoints/``;
- the tag ``eventbus.last_seq``: the highest seq the MLflow run holds.

Exactly once. MLflow only appends (a metric logged twice at a step shows twice), so the sink
never sends anything twice: records at or below ``eventbus.last_seq`` are skipped, and a metric
already at a step in the MLflow run (read back when the sink finds the run) is not logged again.
It also sends only what a resume will not write again: the records of an epoch go to MLflow when
that epoch has ended (or the run has), never those of an epoch in progress, which a crash would
abandon and a resume run again with other values. A crash therefore leaves MLflow at most
behind the event log, and a resume (``catch_up``) or a backfill writes what it lacks.

MLflow is imported when the sink first talks to the store, never by ``import sinks.mlflow``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eventbus import Sink
from eventbus.errors import ConfigError
from eventbus.records import DECISION_KINDS
from eventbus.records import Warning as WarningRecord

if TYPE_CHECKING:
    from eventbus.run import Run

__all__ = ["RUN_ID_TAG", "SEQ_TAG", "MLflowSink", "backfill"]

#: The tag an MLflow run carries the event log's run id in: how a resume finds it again.
RUN_ID_TAG = "eventbus.run_id"
#: The tag holding the highest seq the MLflow run has (records at or below it are skipped).
SEQ_TAG = "eventbus.last_seq"

_PARAM_LENGTH = 6000  # MLflow's limits on a param value, a tag value and a batch
_TAG_LENGTH = 8000
_PER_BATCH = 100
_METRICS_PER_BATCH = 1000
# What MLflow accepts in a metric, param or tag key; anything else becomes "_".
_KEY_BAD = re.compile(r"[^\w\-. /]")
# Batch logs that are the batch's description, not a metric (Keras's loggers leave them out).
_NOT_LOGGED = frozenset({"batch", "size"})


def _key(name: str) -> str:
    return _KEY_BAD.sub("_", name)[:250]


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


class MLflowSink(Sink):
    """Write a run into an MLflow tracking store (see the module documentation).

    ``tracking_uri``: the store (``sqlite:///mlflow.db``, ``http://127.0.0.1:5000``, a
    ``file:`` URI); None: MLflow's own default (``MLFLOW_TRACKING_URI``). ``experiment``: the
    experiment's name, made if missing. ``batch_every``: log batch metrics every that many
    steps (None: epoch metrics only). ``run_name``: the MLflow run's name (default: the event
    log's run id). ``checkpoints``: upload ``checkpoint_saved`` files as artifacts.
    """

    name = "mlflow"

    def __init__(self, tracking_uri: str | None = None, *, experiment: str = "eventbus",
                 batch_every: int | None = None, run_name: str | None = None,
                 checkpoints: bool = True):
        if tracking_uri is not None and (not isinstance(tracking_uri, str) or not tracking_uri):
            raise ConfigError(f"MLflowSink: tracking_uri must be None or a non-empty str; got "
                              f"{tracking_uri!r}", plugin=self.name, field="tracking_uri")
        if not isinstance(experiment, str) or not experiment:
            raise ConfigError(f"MLflowSink: experiment must be a non-empty str; got "
                              f"{experiment!r}", plugin=self.name, field="experiment")
        if run_name is not None and not isinstance(run_name, str):
            raise ConfigError(f"MLflowSink: run_name must be None or a str; got {run_name!r}",
                              plugin=self.name, field="run_name")
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.batch_every = _require_positive_int(batch_every, "batch_every")
        self.run_name = run_name
        self.checkpoints = bool(checkpoints)
        takes = {"header", "train_begin", "epoch_end", "train_end", "checkpoint_saved",
                 *DECISION_KINDS}
        if self.batch_every is not None:
            takes.add("batch_end")
        self.takes = frozenset(takes)
        self._run: Run | None = None
        self._client: Any = None
        #: The MLflow run's id, once found or made.
        self.mlflow_run_id: str | None = None
        self._last_seq = -1  # what the MLflow run holds
        self._have: dict[str, set[int]] = {}  # metric key -> steps it has
        self._params: set[str] = set()
        self._tags: set[str] = set()
        # Records taken but not sent: (epoch it belongs to, or None, record).
        self._pending: list[tuple[int | None, dict[str, Any]]] = []
        self._ended_epoch = -1  # the last epoch whose epoch_end was taken
        self._ended = False  # train_end taken: everything may go
        #: Checkpoint paths that were gone when their record was sent.
        self.missing_checkpoints: list[str] = []

    # --- the store -----------------------------------------------------------------------------

    def _connect(self, run_id: str) -> None:
        """Find the MLflow run of ``run_id`` (or make it), and read what it holds."""
        if self._client is not None:
            return
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.tracking_uri)
        experiment = client.get_experiment_by_name(self.experiment)
        experiment_id = experiment.experiment_id if experiment is not None else \
            client.create_experiment(self.experiment)
        found = client.search_runs([experiment_id],
                                   filter_string=f"tags.`{RUN_ID_TAG}` = '{run_id}'",
                                   max_results=2)
        if found:
            run = found[0]
            self.mlflow_run_id = run.info.run_id
            data = run.data
            self._last_seq = int(data.tags.get(SEQ_TAG, -1))
            self._params = set(data.params)
            self._tags = set(data.tags)
            for key in data.metrics:
                self._have[key] = {m.step for m in client.get_metric_history(
                    self.mlflow_run_id, key)}
            if run.info.status != "RUNNING":  # a resume after a failure, or a backfill
                client.update_run(self.mlflow_run_id, status="RUNNING")
        else:
            made = client.create_run(experiment_id, run_name=self.run_name or run_id,
                                     tags={RUN_ID_TAG: run_id})
            self.mlflow_run_id = made.info.run_id
        self._client = client

    # --- the sink ------------------------------------------------------------------------------

    def open(self, run: Run) -> None:
        self._run = run
        self._connect(run.run_id)

    def catch_up(self, record: dict[str, Any], run: Run) -> None:
        """On resume, before ``open``: a record of the run so far; what the MLflow run lacks of
        it is sent at the next flush (a crash can end the run before this sink's flush)."""
        self._run = run
        self._connect(run.run_id)
        self._take(record, settled=True)

    def write(self, record: dict[str, Any]) -> Any:
        if self._client is None:  # a bus that was never opened (convert writes recorded runs)
            self._connect(record["run_id"])
        self._take(record, settled=False)
        return None

    def _take(self, record: dict[str, Any], *, settled: bool) -> None:
        if record["seq"] <= self._last_seq:
            return
        kind = record["kind"]
        if kind == "batch_end" and (record["step"] + 1) % self.batch_every:  # type: ignore[operator]
            return
        # Everything of a recorded run before the point it resumes from is settled.
        epoch = None if settled else record.get("epoch")
        self._pending.append((epoch, record))
        if kind == "epoch_end" and not settled:
            self._ended_epoch = max(self._ended_epoch, record["epoch"])
        elif kind == "train_end":
            self._ended = True

    def flush(self) -> None:
        """Send what a resume will not write again: everything but the records of an epoch
        still in progress (all of it once the run has ended)."""
        if self._client is None or not self._pending:
            return
        if self._ended:
            ready, self._pending = self._pending, []
        else:
            ready = [p for p in self._pending if p[0] is None or p[0] <= self._ended_epoch]
            self._pending = [p for p in self._pending
                             if not (p[0] is None or p[0] <= self._ended_epoch)]
        if ready:
            self._send([record for _, record in ready])

    def _send(self, records: list[dict[str, Any]]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        metrics: list[Any] = []
        params: dict[str, str] = {}
        tags: dict[str, str] = {}
        files: list[str] = []
        for record in records:
            kind = record["kind"]
            if kind == "header":
                params.update(self._header_params(record))
            elif kind == "train_begin":
                params.update({_key(k): _text(v, _PARAM_LENGTH)
                               for k, v in (record.get("params") or {}).items() if v is not None})
            elif kind in ("epoch_end", "batch_end"):
                # A batch's step is the batches done, as in TensorBoard.
                step = record["epoch"] if kind == "epoch_end" else record["step"] + 1
                prefix = "" if kind == "epoch_end" else "batch_"
                stamp = int(record["time"] * 1000)
                for name, value in record["logs"].items():
                    if prefix and name in _NOT_LOGGED:
                        continue
                    key = _key(prefix + name)
                    steps = self._have.setdefault(key, set())
                    if step in steps or not isinstance(value, (int, float)):
                        continue
                    steps.add(step)
                    metrics.append(Metric(key, float(value), stamp, step))
            elif kind in DECISION_KINDS:
                key, value = _decision_tag(record)
                if key not in self._tags:
                    tags[key] = value
            elif kind == "checkpoint_saved" and self.checkpoints:
                files.append(record["path"])
        params = {k: v for k, v in params.items() if k not in self._params}
        client, run_id = self._client, self.mlflow_run_id
        for i in range(0, len(metrics), _METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=metrics[i:i + _METRICS_PER_BATCH])
        items = list(params.items())
        for i in range(0, len(items), _PER_BATCH):
            client.log_batch(run_id, params=[Param(k, v) for k, v in items[i:i + _PER_BATCH]])
        self._params.update(params)
        for path in files:
            self._upload(path)
        # The seq last: a crash before it sends these records again, and what they hold
        # already (metrics at their steps, params, tags) is then skipped.
        tags[SEQ_TAG] = str(max(r["seq"] for r in records))
        items = list(tags.items())
        for i in range(0, len(items), _PER_BATCH):
            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in items[i:i + _PER_BATCH]])
        self._tags.update(tags)
        self._last_seq = max(self._last_seq, int(tags[SEQ_TAG]))

    def _header_params(self, header: Mapping[str, Any]) -> dict[str, str]:
        out = {}
        for spec in header.get("plugins") or ():
            label = spec.get("label") or spec["name"]
            for name, value in (spec.get("params") or {}).items():
                out[_key(f"{label}.{name}")] = _text(value, _PARAM_LENGTH)
        for name, value in (header.get("meta") or {}).items():
            out[_key(f"meta.{name}")] = _text(value, _PARAM_LENGTH)
        return out

    def _upload(self, path: str) -> None:
        target = Path(path)
        if target.is_dir():
            self._client.log_artifacts(self.mlflow_run_id, str(target),
                                       f"checkpoints/{target.name}")
        elif target.is_file():
            self._client.log_artifact(self.mlflow_run_id, str(target), "checkpoints")
        else:  # removed since (a backfill long after the run, a checkpoint kept only at best)
            self.missing_checkpoints.append(path)
            if self._run is not None:
                self._run.report(WarningRecord(
                    source=self.name, message=f"MLflow: checkpoint {path} is gone; not "
                    "uploaded", details={"path": path}))

    def close(self) -> Any:
        client = self._client
        if client is None:
            return None
        self.flush()
        if self._ended:
            client.set_terminated(self.mlflow_run_id, status="FINISHED")
        # Else the run stays RUNNING, as a crashed one does: a resume goes on with it.
        self._client = None
        return None


def _decision_tag(record: Mapping[str, Any]) -> tuple[str, str]:
    """The tag of one decision. Keyed on the event that caused it, so a decision a crash kept
    out of the log, made again on resume with a new seq, lands on the same tag."""
    cause = record.get("cause_seq")
    key = _key(f"eventbus.decision.{cause if cause is not None else record['seq']}."
               f"{record['kind']}.{record.get('source') or 'bus'}")
    parts = [f"epoch {record.get('epoch')}: {record.get('reason', '')}"]
    if record.get("value") is not None:
        parts.append(f"learning rate {record.get('previous')} -> {record['value']}")
    if record.get("path"):
        parts.append(f"path {record['path']}")
    if record.get("evidence"):
        parts.append("evidence " + json.dumps(record["evidence"], sort_keys=True, default=str))
    return key, _text("; ".join(parts), _TAG_LENGTH)


def backfill(log: str | os.PathLike[str], tracking_uri: str | None = None, *,
             experiment: str = "eventbus", batch_every: int | None = None,
             checkpoints: bool = True) -> int:
    """Write the run in ``log`` (finished or crashed) into MLflow; returns the records read
    (those of the kinds the sink takes).

    The run as it went on (a resumed run's abandoned partial epochs left out) is sent as the
    live sink sends it: a crashed run's epochs up to its last whole one (the resume runs the
    partial one again), a finished run whole. Nothing the MLflow run holds already is sent
    again, so a second backfill, or one after the live sink wrote part of the run, adds
    nothing. A crashed run's MLflow run stays RUNNING.
    """
    from eventbus.effective import read_effective

    if not Path(log).exists():
        raise ConfigError(f"convert: {os.fspath(log)}: no such log", field="log")
    sink = MLflowSink(tracking_uri, experiment=experiment, batch_every=batch_every,
                      checkpoints=checkpoints)
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
        sink.flush()
    finally:
        sink.close()
    return count

