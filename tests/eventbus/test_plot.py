"""eventbus.plot: what ``audit --plot`` draws, checked on the data it is drawn from and on the
PNG read back with matplotlib's own reader."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_audit import deferring_run

from eventbus import records as r
from eventbus.audit import audit
from eventbus.testing import epochs, run

from hypothesis_profiles import examples

pytest.importorskip("matplotlib")

from eventbus.plot import (  # noqa: E402
    DEFERRED_STOP,
    figure_of,
    learning_rate_steps,
    plot_audit,
    plot_data,
)
from plugins import EarlyStopping, ReduceLROnPlateau  # noqa: E402


class Weights:
    """A model adapter with weights to snapshot and restore, and nothing else."""

    def get_weights(self):
        return {"w": 0}

    def set_weights(self, weights):
        pass


def plateau_run(val_loss: list[float], *, patience: int = 1, stop_patience: int = 3,
                learning_rate: float = 0.1) -> list[r.Record]:
    """A fit whose loop stops when a plugin asks: ReduceLROnPlateau, and EarlyStopping
    restoring the best weights."""
    n = len(val_loss)
    plugins = [ReduceLROnPlateau(monitor="val_loss", patience=patience, factor=0.5),
               EarlyStopping(monitor="val_loss", patience=stop_patience,
                             restore_best_weights=True)]
    _, records = run(plugins, epochs(val_loss=val_loss, loss=[v * 1.1 for v in val_loss],
                                     acc=[0.5] * n, val_acc=[0.6] * n),
                     learning_rate=learning_rate, model=Weights())
    return records


def rate_at(steps: tuple[list[int], list[float]], x: float) -> float:
    """The rate the steps hold at ``x``: ``y[i]`` from ``x[i]`` to ``x[i+1]``."""
    xs, ys = steps
    return next(y for left, y in zip(reversed(xs), reversed(ys)) if left <= x)


# Plateaus: values that rise now and then, so ReduceLROnPlateau cuts the rate.
val_losses = st.lists(st.floats(0.1, 2.0), min_size=2, max_size=25)


class TestLearningRateSteps:
    @examples(0.3)
    @given(val_losses, st.integers(1, 3))
    def test_the_rate_steps_at_the_epoch_of_each_cut(self, values, patience):
        """Each applied cut made at the end of epoch k (counted from 1) changes the drawn rate
        at x = k, where its decision line is: the old rate just before, the new just after."""
        result = audit(plateau_run(values, patience=patience))
        steps = learning_rate_steps(result)
        assert steps is not None
        marks = {m.epoch: m.kinds for m in plot_data(result).marks}
        for cut in result.lr_changes:
            k = cut.epoch + 1
            assert rate_at(steps, k - 0.01) == pytest.approx(cut.previous)
            assert rate_at(steps, k + 0.01) == pytest.approx(cut.value)
            assert "set_learning_rate" in marks[k]

    def test_the_rate_of_each_epoch_holds_over_its_span(self):
        """Epoch k trains over (k-1, k]: the rate it logged is drawn there."""
        result = audit(plateau_run([1.0, 0.9, 0.95, 0.97, 0.99, 1.0]))
        steps = learning_rate_steps(result)
        for epoch, logged in result.curves["learning_rate"]:
            assert rate_at(steps, epoch + 0.5) == logged  # within (epoch, epoch + 1]

    def test_the_last_epochs_cut_is_drawn_though_no_epoch_logged_it(self):
        """The rate set at the end of the last epoch is the last step."""
        result = audit(plateau_run([1.0, 0.9, 0.95, 0.97, 0.99, 1.0]))
        last_cut = result.lr_changes[-1]
        assert last_cut.epoch == result.last_epoch
        xs, ys = learning_rate_steps(result)
        assert (xs[-1], ys[-1]) == (result.last_epoch + 1, last_cut.value)

    def test_without_a_logged_rate_the_decisions_give_the_steps(self):
        """A log whose epochs carry no learning_rate: the steps come from the cuts."""
        records = [rec for rec in plateau_run([1.0, 0.9, 0.95, 0.97, 0.99])]
        for rec in records:
            if isinstance(rec, r.EpochEnd):
                rec.logs.pop("learning_rate")
        result = audit(records)
        assert "learning_rate" not in result.curves
        steps = learning_rate_steps(result)
        for cut in result.lr_changes:
            assert rate_at(steps, cut.epoch + 1 + 0.01) == cut.value
        assert rate_at(steps, 0) == result.lr_changes[0].previous


class TestPanels:
    def test_losses_metrics_and_the_rate_each_have_a_panel(self):
        """Loss and accuracy never share an axis; the learning rate has its own, log-scaled."""
        data = plot_data(audit(plateau_run([1.0, 0.9, 0.95, 0.97, 0.99])))
        assert [(p.family, sorted(c.name for c in p.curves)) for p in data.panels] == [
            ("losses", ["loss", "val_loss"]), ("metrics", ["acc", "val_acc"]),
            ("learning rate", ["learning_rate"])]
        assert data.panels[-1].log_scale and data.panels[-1].steps

    def test_epochs_are_drawn_counted_from_1(self):
        """Epoch 0 of the log is drawn at 1, as the audit text and Keras count."""
        result = audit(plateau_run([1.0, 0.9, 0.95]))
        (losses, *_) = plot_data(result).panels
        loss = next(c for c in losses.curves if c.name == "val_loss")
        assert loss.x == [1, 2, 3] and loss.y == [1.0, 0.9, 0.95]

    def test_a_metric_of_several_values_is_left_out_not_fatal(self):
        """A list-valued metric (per class) is neither a curve nor a bad record."""
        records = plateau_run([1.0, 0.9, 0.95])
        fields = []
        for rec in records:
            if isinstance(rec, r.EpochEnd):
                rec = r.EpochEnd.model_construct(**{**rec.__dict__,
                                                    "logs": {**rec.logs, "f1": [0.1, 0.9]}})
            fields.append(rec)
        result = audit(fields)
        assert result.vector_metrics == ["f1"] and result.bad_records == []
        names = {c.name for p in plot_data(result).panels for c in p.curves}
        assert "f1" not in names and "val_loss" in names
        figure_of(result)  # draws


class TestMarks:
    def test_several_decisions_at_one_epoch_are_spread_and_labelled_together(self):
        """The last epoch's cut, stop and restore: three lines apart, one label naming all."""
        result = audit(plateau_run([1.0, 0.9, 0.95, 0.97, 0.99, 1.0]))
        last = plot_data(result).marks[-1]
        assert last.epoch == result.last_epoch + 1
        assert last.kinds == ["set_learning_rate", "stop_training", "restore_weights"]
        assert len(set(last.offsets)) == 3 and min(
            b - a for a, b in zip(last.offsets, last.offsets[1:])) > 0.1
        assert last.label == "lr, stop, restore"

    def test_the_restored_best_epoch_is_marked(self):
        """EarlyStopping restored epoch 2 (counted from 1): the best val_loss is there and
        marked restored."""
        result = audit(plateau_run([1.0, 0.9, 0.95, 0.97, 0.99, 1.0]))
        data = plot_data(result)
        assert data.restored_epochs == [2]
        (best,) = data.best
        assert (best.name, best.epoch, best.value, best.restored) == ("val_loss", 2, 0.9, True)

    def test_a_deferred_stop_is_drawn_apart_from_the_stop_that_ended_the_run(self):
        """A loop that stops only from epoch 6: the earlier asks are deferred stops."""
        result = audit(deferring_run([1.0, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0], min_epochs=6))
        data = plot_data(result)
        deferred = [m.epoch for m in data.marks if DEFERRED_STOP in m.kinds]
        stops = [m.epoch for m in data.marks if "stop_training" in m.kinds]
        assert deferred == [d.epoch + 1 for d in result.deferred_stops] == [4, 5]
        assert stops == [6]
        assert "deferred" in data.title

    @given(st.text(min_size=1, max_size=200), st.text(max_size=200), st.integers(0, 100_000))
    def test_the_title_cuts_the_run_id_and_sources_as_names_are_cut(self, run_id, source, pad):
        """The run id and the sources of the stop and the first deferred stop come from the
        log: each at most 60 characters in the title, as a metric's name in a label (a
        100 KB source took `audit --plot` 24 s of CPU to lay out)."""
        records = deferring_run([1.0, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0], min_epochs=6)
        run_id, source = run_id + "R" * pad, source + "S" * pad
        records = [x.model_copy(update={"run_id": run_id}) for x in records]
        records = [x.model_copy(update={"source": source}) if isinstance(x, r.StopTraining)
                   else x for x in records]
        result = audit(records)
        assert result.stop is not None and result.deferred_stops
        title = plot_data(result).title
        fixed = plot_data(audit(deferring_run([1.0, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0],
                                              min_epochs=6))).title
        assert len(title) <= len(fixed) + 3 * 60
        for text in (run_id, source):
            assert (text if len(text) <= 60 else text[:59] + "\u2026") in title


def test_a_long_run_labels_only_the_telling_epochs():
    """Past 40 marked epochs the labels would run together: only the epochs with a stop, a
    restore or several decisions are labelled; every decision still has its line."""
    import matplotlib.pyplot as plt

    values = [1.0 - i * 0.001 if i % 2 == 0 else 2.0 for i in range(100)]
    result = audit(plateau_run(values, patience=1, stop_patience=1000))
    data = plot_data(result)
    assert len(data.marks) > 40
    fig = figure_of(result)
    try:
        top = fig.get_axes()[0]
        labels = [t.get_text() for t in top.texts]
        assert labels == [m.label for m in data.marks if len(m.kinds) > 1
                          or m.kinds[0] in ("stop_training", "restore_weights")]
        from matplotlib.collections import LineCollection

        # One collection of lines per kind (an artist per decision cost seconds and hundreds
        # of MB on a log of thousands): every decision still has its line in one.
        collections = [c for c in top.collections if isinstance(c, LineCollection)]
        assert len(collections) == len({k for m in data.marks for k in m.kinds})
        assert sum(len(c.get_segments()) for c in collections) == \
            sum(len(m.kinds) for m in data.marks)
    finally:
        plt.close(fig)


def test_restored_epochs_are_one_collection_of_spans_a_panel():
    """Each restored epoch is a gold span on every panel, all of a panel's in one collection:
    a patch per epoch cost 7 ms each, and a log naming a thousand restored epochs took the
    plot seconds. The spans leave the panels' value ranges as they were."""
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    result = audit(plateau_run([1.0, 0.9, 0.95, 0.97, 0.99, 1.0]))
    plain = figure_of(result)
    limits = [ax.get_ylim() for ax in plain.get_axes()]
    plt.close(plain)
    restores = [r.RestoreWeights(reason="r", tag="best", evidence={"best_epoch": e},
                                 source="EarlyStopping", seq=1000 + e, epoch=5, time=1.0,
                                 run_id=result.header.run_id) for e in range(300)]
    result.decisions.extend(restores)
    data = plot_data(result)
    assert data.restored_epochs == [2, *range(1, 2), *range(3, 301)]
    fig = figure_of(result)
    try:
        for ax, ylim in zip(fig.get_axes(), limits):
            (spans,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
            starts = sorted(path.vertices[:, 0].min() for path in spans.get_paths())
            assert starts == [e - 0.5 for e in range(1, 301)]
            assert ax.get_ylim() == ylim
    finally:
        plt.close(fig)


class TestThePng:
    def test_the_png_reads_back_with_three_panels_and_legends_beside_them(self, tmp_path):
        """The image matplotlib reads back has the figure's size; each legend lies right of
        its axes, covering no curve."""
        import matplotlib.image as mpimg
        import matplotlib.pyplot as plt

        result = audit(plateau_run([1.0, 0.9, 0.95, 0.97, 0.99, 1.0]))
        fig = figure_of(result)
        try:
            axes = fig.get_axes()
            assert [ax.get_ylabel() for ax in axes] == ["losses", "metrics", "learning rate"]
            fig.canvas.draw()
            for ax in axes:
                legend = ax.get_legend()
                assert legend is not None
                assert legend.get_window_extent().x0 >= ax.get_window_extent().x1
            width, height = (round(v * 100) for v in fig.get_size_inches())
        finally:
            plt.close(fig)
        png = tmp_path / "run.png"
        plot_audit(result, png)
        image = mpimg.imread(png)
        assert image.shape[:2] == (height, width)
        # Not blank: curves, lines and text in several colours.
        assert len({tuple(px) for px in image.reshape(-1, image.shape[2])[::97]}) > 20

    def test_a_log_with_no_metrics_still_draws(self, tmp_path):
        """An epoch with no metrics: one empty panel and a title, no error."""
        _, records = run([], epochs(loss=[]))
        result = audit(records)
        plot_audit(result, tmp_path / "empty.png")
        assert (tmp_path / "empty.png").stat().st_size > 0


    def test_names_from_the_log_are_drawn_as_text_never_as_math(self, tmp_path):
        """A metric named ``$\\undefinedmacro$`` failed the plot (matplotlib's mathtext), and
        ``a$b$c$`` drew as a formula: the names are drawn as they are."""
        import matplotlib.pyplot as plt

        names = ["$\\undefinedmacro$", "a$b$c$"]
        _, records = run([], epochs(**{names[0]: [1.0, 0.5], names[1]: [0.2, 0.3]}))
        result = audit(records)
        plot_audit(result, tmp_path / "run.png")
        assert (tmp_path / "run.png").stat().st_size > 0
        fig = figure_of(result)
        try:
            fig.canvas.draw()
            shown = {text.get_text() for ax in fig.get_axes()
                     for text in ax.get_legend().get_texts()}
            assert set(names) <= shown
            assert not any(text.get_parse_math() for ax in fig.get_axes()
                           for text in ax.get_legend().get_texts())
        finally:
            plt.close(fig)


def test_rate_at_reads_steps_as_drawn():
    """The helper above reads ``where="post"`` steps."""
    assert rate_at(([0, 2, 5], [1.0, 0.5, 0.25]), 1.99) == 1.0
    assert rate_at(([0, 2, 5], [1.0, 0.5, 0.25]), 2) == 0.5
    assert math.isclose(rate_at(([0, 2, 5], [1.0, 0.5, 0.25]), 9), 0.25)
