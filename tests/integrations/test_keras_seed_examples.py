"""The seed's three Keras examples (shared/seed, "Callbacks") in a real Keras 3 ``model.fit``.

Each example is the seed's code with its imports changed to this project's plugins
(``keras.callbacks.X`` -> ``plugins.X``) and nothing else of its logic, run on tiny data with
the torch backend. What the seed leaves to the reader is filled in: the data, ``processes =
...``, ``/tmp`` paths (a test directory), and Python 3's ``print(...)``; ``epochs=20`` is 4
here, to keep the tests quick.
"""

from __future__ import annotations

import multiprocessing
import os
import time

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("MPLBACKEND", "Agg")
pytest.importorskip("torch")
keras = pytest.importorskip("keras")
pytest.importorskip("matplotlib")
if keras.backend.backend() != "torch":
    pytest.skip("these tests run Keras on its torch backend", allow_module_level=True)

from keras.layers import Activation, Dense  # noqa: E402
from keras.models import Sequential  # noqa: E402

from eventbus import SinkFailureWarning  # noqa: E402

pytestmark = [
    # Keras's torch backend converts its own tensors the NumPy 1 way; not ours to fix.
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
    # The seed's Keras 2 style Dense(input_dim=784), which Keras 3 still takes, with advice.
    pytest.mark.filterwarnings("ignore:Do not pass an `input_shape`/`input_dim`:UserWarning"),
]


@pytest.fixture
def data():
    """The seed's X_train/Y_train (784 features, 10 classes), 256 samples instead of MNIST."""
    rng = np.random.default_rng(0)
    x = rng.random((256, 784)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 10, 256), 10)
    keras.utils.set_random_seed(0)
    return x[:192], y[:192], x[192:], y[192:]


def seed_model():
    model = Sequential()
    model.add(Dense(10, input_dim=784, kernel_initializer='uniform'))
    model.add(Activation('softmax'))
    model.compile(loss='categorical_crossentropy', optimizer='rmsprop')
    return model


def test_lambda_callback_example(data, capsys):
    """The LambdaCallback example. Its batch printing and its cleanup run as written. Its plot
    is wrong as written (``plt.plot(np.arange(epoch), logs['loss'])`` has 0 x values for 1 y
    value at epoch 0: in Keras, fit dies there); here the callback is recorded as failed and
    left out, training goes on, and the failure is a SinkFailureWarning naming it."""
    X_train, Y_train, _, _ = data
    model = seed_model()
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=time.sleep, args=(60,)) for _ in range(2)]
    for p in processes:
        p.start()

    # --- the seed's code, imports changed ---
    from plugins import LambdaCallback
    # Print the batch number at the beginning of every batch.
    batch_print_callback = LambdaCallback(
        on_batch_begin=lambda batch,logs: print(batch))
    # Plot the loss after every epoch.
    import matplotlib.pyplot as plt
    import numpy as np
    plot_loss_callback = LambdaCallback(
        on_epoch_end=lambda epoch, logs: plt.plot(np.arange(epoch),
                          logs['loss']))
    # Terminate some processes after having finished model training.
    cleanup_callback = LambdaCallback(
        on_train_end=lambda logs: [
        p.terminate() for p in processes if p.is_alive()])
    with pytest.warns(SinkFailureWarning, match="LambdaCallback#2 on epoch_end: ValueError: "
                                                "x and y must have same first dimension"):
        model.fit(X_train, Y_train, batch_size=64, epochs=3, verbose=0,
              callbacks=[batch_print_callback,
                 plot_loss_callback,
                 cleanup_callback])
    # --- end of the seed's code ---

    for p in processes:
        p.join(10)
    assert [p.exitcode for p in processes] == [-15, -15]  # SIGTERM: terminate() reached them
    assert capsys.readouterr().out.split() == ["0", "1", "2"] * 3
    plt.close("all")


def test_loss_history_example(data):
    """The LossHistory example: the seed's class, its base now plugins.Callback, records every
    batch's loss; fit's own History is returned beside it."""
    X_train, Y_train, _, _ = data

    # --- the seed's code, imports changed ---
    from plugins import Callback
    class LossHistory(Callback):
        def on_train_begin(self, logs={}):  # noqa: B006 - the seed's code
            self.losses = []
        def on_batch_end(self, batch, logs={}):  # noqa: B006
            self.losses.append(logs.get('loss'))
    model = Sequential()
    model.add(Dense(10, input_dim=784, kernel_initializer='uniform'))
    model.add(Activation('softmax'))
    model.compile(loss='categorical_crossentropy', optimizer='rmsprop')
    history = LossHistory()
    keras_history = model.fit(X_train, Y_train, batch_size=128, epochs=4, verbose=0,
                              callbacks=[history])
    print(history.losses)
    # --- end of the seed's code ---

    assert len(history.losses) == 4 * 2  # 192 samples in batches of 128: 2 per epoch
    assert all(isinstance(loss, float) and loss > 0 for loss in history.losses)
    assert len(keras_history.history["loss"]) == 4  # Keras's own History still works


def test_model_checkpoint_example(data, tmp_path, capsys):
    """The ModelCheckpoint example: the best model is saved where asked, with verbose output.
    (Reading the file back with Keras's own loader is the checkpoint work's to test.)"""
    X_train, Y_train, X_test, Y_test = data
    weights = str(tmp_path / "weights.hdf5")

    # --- the seed's code, imports changed ---
    from plugins import ModelCheckpoint
    model = Sequential()
    model.add(Dense(10, input_dim=784, kernel_initializer='uniform'))
    model.add(Activation('softmax'))
    model.compile(loss='categorical_crossentropy', optimizer='rmsprop')
    # saves the model weights after each epoch if the validation loss decreased
    checkpointer = ModelCheckpoint(filepath=weights, verbose=1, save_best_only=True)
    model.fit(X_train, Y_train, batch_size=128, epochs=4, verbose=0,
              validation_data=(X_test, Y_test), callbacks=[checkpointer])
    # --- end of the seed's code ---

    assert os.path.getsize(weights) > 0
    out = capsys.readouterr().out
    assert "Epoch 1: val_loss improved from inf to" in out
    assert f"saving model to {weights}" in out
