"""Every built-in plugin's constructor: bad arguments are refused at once, naming the plugin.

Errors come in two kinds, as Python's own: a call that does not fit the signature (an unknown
keyword, too many positional arguments) is a TypeError that names the class and lists what it
takes; a value the plugin cannot work with is a ConfigError naming the plugin and the field.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import plugins
from eventbus import ConfigError
from plugins import (
    BackupAndRestore,
    BaseLogger,
    CSVLogger,
    EarlyStopping,
    History,
    LambdaCallback,
    LearningRateScheduler,
    ModelCheckpoint,
    ProgbarLogger,
    ReduceLROnPlateau,
    RemoteMonitor,
    TensorBoard,
    TerminateOnNaN,
)

#: The arguments each built-in plugin needs (the required ones).
REQUIRED: dict[str, dict[str, Any]] = {
    "BackupAndRestore": {"backup_dir": "backup"},
    "CSVLogger": {"filename": "log.csv"},
    "LearningRateScheduler": {"schedule": lambda epoch: 0.1},
    "ModelCheckpoint": {"filepath": "m.h5"},
}

#: (plugin, boolean parameter) for every boolean parameter of the built-in plugins.
BOOLEANS = [
    (BackupAndRestore, "double_checkpoint"), (BackupAndRestore, "delete_checkpoint"),
    (CSVLogger, "append"), (EarlyStopping, "restore_best_weights"),
    (EarlyStopping, "check_finite"), (ModelCheckpoint, "save_best_only"),
    (ModelCheckpoint, "save_weights_only"), (RemoteMonitor, "send_as_json"),
    (TensorBoard, "write_graph"), (TensorBoard, "write_images"),
    (TensorBoard, "write_steps_per_second"), (TerminateOnNaN, "raise_error"),
]


def make(cls: type, **params: Any) -> Any:
    return cls(**{**REQUIRED.get(cls.__name__, {}), **params})


def config_error(cls: type, field: str, **params: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        make(cls, **params)
    assert (info.value.plugin, info.value.field) == (cls.__name__, field), str(info.value)
    assert info.value.args[0].startswith(f"{cls.__name__}: ")
    return info.value


class TestSignatureErrors:
    def test_misspelt_keyword(self):
        """EarlyStopping(patiense=3): a TypeError naming the class, the close match, and the
        parameters it takes."""
        with pytest.raises(TypeError) as info:
            EarlyStopping(patiense=3)
        message = str(info.value)
        assert message.startswith("EarlyStopping() got an unexpected keyword argument "
                                  "'patiense' (did you mean 'patience'?)")
        assert "EarlyStopping(monitor, min_delta, patience," in message
        assert "*, check_finite, stopping_threshold, divergence_threshold)" in message

    def test_too_many_positional_arguments(self):
        """History(5) names History, as Python names the function it calls."""
        with pytest.raises(TypeError, match=r"^History\(\) takes no arguments but 1 was given"):
            History(5)
        with pytest.raises(TypeError, match=r"^ModelCheckpoint\(\) takes at most 8 positional "
                                            r"arguments \(filepath, monitor, .*\) but 9 were "
                                            r"given; pass the others by keyword"):
            ModelCheckpoint(*(["m.h5"] + [None] * 8))

    def test_missing_required_argument(self):
        """A missing required argument names the class and the argument."""
        with pytest.raises(TypeError, match=r"^CSVLogger\(\) missing a required argument: "
                                            r"'filename'"):
            CSVLogger()

    @pytest.mark.parametrize("name", sorted(set(plugins.__all__) - {"Callback"}))
    def test_every_plugin_names_itself_for_an_unknown_keyword(self, name):
        """Every built-in plugin: an unknown keyword is an error whose message begins with the
        plugin's name (a ConfigError where the plugin takes **kwargs, as Keras's do)."""
        cls = getattr(plugins, name)
        # LambdaCallback keeps any other keyword as an attribute, as Keras's: a hook-like name
        keyword = "on_no_such_hook" if name == "LambdaCallback" else "no_such_parameter"
        with pytest.raises((TypeError, ConfigError)) as info:
            make(cls, **{keyword: 1})
        assert str(info.value).startswith(name), str(info.value)

    def test_a_subclass_is_named(self):
        """A subclass without a constructor of its own is named, not its base."""
        class MyStopper(EarlyStopping):
            pass

        with pytest.raises(TypeError, match=r"^MyStopper\(\) got an unexpected keyword"):
            MyStopper(patiense=3)

    def test_the_right_arguments_still_record_the_config(self):
        """The wrapper still records the arguments for the log header."""
        assert EarlyStopping("loss", patience=3).get_config()["patience"] == 3


class TestBooleans:
    @pytest.mark.parametrize(("cls", "field"), BOOLEANS)
    @pytest.mark.parametrize("value", ["no", "False", 1, 0, None, 1.0])
    def test_non_bools_are_refused(self, cls, field, value):
        """A boolean option given a str, an int or None is a ConfigError naming it: "no" is
        not silently True."""
        config_error(cls, field, **{field: value})

    @pytest.mark.parametrize(("cls", "field"), BOOLEANS)
    @given(value=st.booleans())
    def test_bools_are_taken_as_given(self, cls, field, value):
        """Property: True and False are accepted and kept as they are."""
        assert getattr(make(cls, **{field: value}), field) is value

    @pytest.mark.parametrize(("cls", "field"), BOOLEANS)
    @given(value=st.one_of(st.integers(), st.floats(), st.text(), st.none(),
                           st.lists(st.booleans())))
    def test_anything_else_is_refused(self, cls, field, value):
        """Property: no value but a bool passes a boolean option."""
        config_error(cls, field, **{field: value})

    def test_numpy_bools_are_bools(self):
        """NumPy's bools pass as what they are."""
        np = pytest.importorskip("numpy")
        assert CSVLogger("x.csv", append=np.True_).append is True


#: Every built-in plugin with Keras's ``verbose``.
VERBOSE = [EarlyStopping, LearningRateScheduler, ModelCheckpoint, ProgbarLogger,
           ReduceLROnPlateau, TerminateOnNaN]


class TestVerbose:
    @pytest.mark.parametrize("cls", VERBOSE)
    @pytest.mark.parametrize(("given_value", "kept"), [(True, 1), (False, 0), (1, 1), (0, 0)])
    def test_a_bool_is_taken_as_keras_takes_it(self, cls, given_value, kept):
        """Keras code passes ``verbose=True`` (Keras compares ``verbose > 0``): it runs with
        only its imports changed, kept as the int it means, as the header records it."""
        plugin = make(cls, verbose=given_value)
        assert plugin.verbose == kept and type(plugin.verbose) is int
        assert plugin.get_config()["verbose"] == kept

    @pytest.mark.parametrize("cls", VERBOSE)
    @pytest.mark.parametrize("value", ["1", None, 1.5, -1, [1]])
    def test_anything_else_is_refused(self, cls, value):
        """What is neither a level nor a bool is still a ConfigError naming ``verbose``."""
        config_error(cls, "verbose", verbose=value)


class TestPathsAndNames:
    @pytest.mark.parametrize(("cls", "field", "value"), [
        (CSVLogger, "filename", 3), (CSVLogger, "filename", None), (CSVLogger, "filename", ""),
        (TensorBoard, "log_dir", None), (TensorBoard, "log_dir", 5),
        (ModelCheckpoint, "filepath", 3.5),
    ])
    def test_a_path_that_is_not_one(self, cls, field, value):
        """Not "expected str, bytes or os.PathLike object" from deep inside: a ConfigError."""
        config_error(cls, field, **{field: value})

    @pytest.mark.parametrize(("cls", "field", "value"), [
        (TensorBoard, "embeddings_layer_names", 5), (TensorBoard, "embeddings_layer_names", [1]),
        (BaseLogger, "stateful_metrics", 5), (RemoteMonitor, "headers", 5),
        (RemoteMonitor, "headers", ["ab"]), (RemoteMonitor, "headers", {"Auth": 5}),
        (RemoteMonitor, "headers", {1: "x"}), (TensorBoard, "embeddings_metadata", 5),
        (TensorBoard, "embeddings_metadata", {"layer": 5}),
    ])
    def test_names_and_mappings(self, cls, field, value):
        """Not "'int' object is not iterable", and a list of headers is not read as pairs."""
        config_error(cls, field, **{field: value})

    @pytest.mark.parametrize("value", [None, ""])
    def test_an_empty_path_in_keras_words(self, value):
        """Keras's "Empty `backup_dir` argument passed" first (its users and its tests know
        those words), then what the field takes."""
        error = config_error(BackupAndRestore, "backup_dir", backup_dir=value)
        assert "Empty `backup_dir` argument passed" in str(error)
        assert "non-empty str or os.PathLike" in str(error)

    @pytest.mark.parametrize("cls", [BackupAndRestore, ModelCheckpoint])
    @pytest.mark.parametrize("value", ["batch", 0.15, 0, -3, True])
    def test_an_unknown_save_freq_in_keras_words(self, cls, value):
        """Both of Keras's callbacks' words ("Unrecognized save_freq", "Invalid value")."""
        error = config_error(cls, "save_freq", save_freq=value,
                             **({"backup_dir": "b"} if cls is BackupAndRestore else
                                {"filepath": "m.keras"}))
        assert "Unrecognized save_freq" in str(error) and "Invalid value" in str(error)
        assert repr(value) in str(error)

    def test_header_values_are_not_in_the_message(self):
        """A header value may be a token: the error names its type only."""
        error = config_error(RemoteMonitor, "headers", headers={"Authorization": b"secret"})
        assert "secret" not in str(error)

    def test_one_layer_name_as_a_str(self):
        """One embedding layer name may be a str."""
        assert TensorBoard(embeddings_layer_names="emb").embeddings_layer_names == ["emb"]


class TestCheckedAtConstruction:
    """Values the plugins used to find wrong only at the first event (as a sink failure)."""

    @pytest.mark.parametrize(("cls", "field", "value"), [
        (TensorBoard, "flush_timeout", "x"), (TensorBoard, "flush_timeout", -1),
        (RemoteMonitor, "timeout", "x"), (RemoteMonitor, "timeout", -1),
        (RemoteMonitor, "timeout", 0), (RemoteMonitor, "backoff", "x"),
        (RemoteMonitor, "backoff", -0.5), (RemoteMonitor, "retries", "x"),
        (RemoteMonitor, "retries", -1), (RemoteMonitor, "retries", 1.5),
        (RemoteMonitor, "max_pending", 0), (RemoteMonitor, "flush_timeout", "x"),
        (ProgbarLogger, "file", 5), (ProgbarLogger, "file", "out.txt"),
        (ProgbarLogger, "mininterval", "x"),
    ])
    def test_bad_values(self, cls, field, value):
        """A ConfigError naming the plugin and the field, before any run."""
        config_error(cls, field, **{field: value})

    def test_good_values(self):
        """The values the checks are there for still pass."""
        assert RemoteMonitor(timeout=0.5, backoff=0, retries=0, max_pending=1,
                             headers={"A": "b"}).headers == {"A": "b"}
        assert ProgbarLogger(file=io.StringIO(), mininterval=0).mininterval == 0.0
        assert TensorBoard(flush_timeout=0).flush_timeout == 0.0

    def test_lambda_callback_functions(self):
        """A LambdaCallback hook that is not callable names the hook."""
        config_error(LambdaCallback, "on_epoch_end", on_epoch_end=3)
