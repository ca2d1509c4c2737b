"""How ``parquet_layout1.parquet`` was made: run from a checkout of eventbus before Parquet
layout 2 (commit 4c32bfe), ``python make_parquet_layout1.py OUT``. The log of a short run whose
plugins decide and warn, as one compacted Parquet file: every decision's and outcome's fields in
the ``payload`` JSON, no layout key in the file's metadata."""

import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.getcwd())

from eventbus import Bus  # noqa: E402 - the checkout given on the path above
from plugins import EarlyStopping, ReduceLROnPlateau  # noqa: E402


def main(out: str) -> None:
    path = os.path.join(tempfile.mkdtemp(), "run.parquet")
    bus = Bus(plugins=[EarlyStopping(monitor="val_loss", patience=2),
                       ReduceLROnPlateau(monitor="val_acc", patience=1, min_delta=0.0)],
              log=path, learning_rate=0.1, run_id="layout1run000001")
    bus.train_begin({"epochs": 6, "steps": 2})
    for epoch, loss in enumerate([1.0, 0.8, 0.9, 0.95, 0.97, 0.99]):
        bus.epoch_begin(epoch)
        for batch in range(2):
            bus.batch_begin(batch)
            bus.batch_end(batch, {"loss": loss + batch / 10})
        bus.epoch_end(epoch, {"loss": loss, "val_loss": loss,
                              **({"val_acc": 0.5} if epoch else {})})
        if bus.stop_training:
            break
    bus.train_end()
    bus.close()
    (segment,) = os.listdir(path)
    shutil.copy(os.path.join(path, segment), out)


if __name__ == "__main__":
    main(sys.argv[1])
