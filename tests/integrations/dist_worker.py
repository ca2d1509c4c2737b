"""One rank of a two-process run for test_distributed_bus.py (spawned by the test, not imported).

    python dist_worker.py RANK WORLD RENDEZVOUS_FILE OUTDIR SCENARIO

Trains a tiny DistributedDataParallel model through gloo (on 127.0.0.1, the ranks meeting
through a file store) and writes ``result.rank{R}.json`` into OUTDIR. Scenarios:

- ``plateau``: a metric ("score") that only rank 1 sees stop improving; EarlyStopping on it.
- ``silent``: rank 1 trains epoch 1's batches, then never reaches its epoch end.
- ``rate-kill`` / ``stop-kill``: only rank 1's "score" stalls, so only its ReduceLROnPlateau
  cuts (``rate``) or its EarlyStopping asks to stop (``stop``) at epoch 4's end; rank 1 is then
  SIGKILLed as it enters that epoch end's agreement, and rank 0 times out waiting for it.
- ``rate-resume`` / ``stop-resume``: both ranks resume that run from their logs.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from eventbus.integrations.distributed import DistributedBus, RankAgreement, RankTimeoutError
from eventbus.integrations.torch import TorchModel, scalars
from plugins import CSVLogger, EarlyStopping, ReduceLROnPlateau

#: The epoch (0-based) at whose end rank 1 is killed in the kill scenarios: the first its
#: score did not improve, so its plugin decided there.
KILLED_AT = 3


def kill_in_agreement(rank: int) -> None:
    """Rank 1 dies as it enters epoch KILLED_AT's agreement: its plugins' decisions are in its
    log, the agreed ones never will be (a job killed while a rank waits there)."""
    exchange = RankAgreement.exchange

    def killing(self, message, combine):
        if rank == 1 and message.get("op") == "epoch_end" and message.get("epoch") == KILLED_AT:
            os.kill(os.getpid(), signal.SIGKILL)
        return exchange(self, message, combine)

    RankAgreement.exchange = killing  # type: ignore[method-assign]


def main() -> None:
    rank, world, rendezvous = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    out, scenario = Path(sys.argv[4]), sys.argv[5]
    kind, _, phase = scenario.partition("-")  # "rate-kill" -> "rate", "kill"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=60))
    torch.manual_seed(0)
    net = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 1))
    # Rank 1 starts with another rate: the agreement gives it rank 0's at the first epoch end.
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1 if rank == 0 else 0.05)
    g = torch.Generator().manual_seed(100 + rank)  # each rank its own shard
    x, y = torch.randn(32, 3, generator=g), torch.randn(32, 1, generator=g)
    vx, vy = torch.randn(16, 3, generator=g), torch.randn(16, 1, generator=g)
    epochs = 12
    if kind == "rate":
        plugins: list = [ReduceLROnPlateau(monitor="score", mode="max", factor=0.5, patience=1)]
    elif kind == "stop":
        plugins = [EarlyStopping(monitor="score", mode="max", patience=1)]
    else:
        plugins = [
            EarlyStopping(monitor="score", mode="max", patience=2),
            ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1, min_delta=1e-2),
            CSVLogger(str(out / "metrics.csv")),
        ]
    if phase:
        epochs = 6
        if phase == "kill":
            kill_in_agreement(rank)
    timeout = 2.0 if scenario == "silent" else 5.0 if phase == "kill" else 20.0
    bus = DistributedBus(plugins, log=out / "events.jsonl", model=TorchModel(net.module, optimizer),
                         timeout=timeout, resume=phase == "resume")
    result: dict = {"rank": rank, "run_id": bus.run_id, "rates": {}}
    try:
        bus.train_begin({"epochs": epochs, "steps": 4})
        # As a resumed loop does: from the bus's initial epoch, none if the run had stopped.
        for epoch in range(bus.initial_epoch, epochs):
            if bus.stop_training:
                break
            bus.epoch_begin(epoch)
            result["rates"][epoch] = optimizer.param_groups[0]["lr"]  # the rate it trains at
            for batch in range(4):
                optimizer.zero_grad()
                loss = torch.nn.functional.mse_loss(net(x[batch * 8:(batch + 1) * 8]),
                                                    y[batch * 8:(batch + 1) * 8])
                loss.backward()  # DDP's gradient all-reduce: ranks stay in step
                optimizer.step()
                bus.batch_end(batch, {"loss": loss.detach()})
            if scenario == "silent" and rank == 1 and epoch == 1:
                time.sleep(30)  # never answers; the test ends this process
            with torch.no_grad():
                val_loss = torch.nn.functional.mse_loss(net(vx), vy)
            # Rank 0's score keeps improving; rank 1's stops improving after epoch 2.
            score = float(epoch) if rank == 0 else float(min(epoch, 2))
            # A vector metric (per output, as a per-class F1 is), averaged element by element.
            val_f1 = torch.tensor([float(rank), 1.0 + epoch])
            bus.epoch_end(epoch, {**scalars({"val_loss": val_loss, "score": score}),
                                  "val_f1": val_f1})
            result["last_epoch"] = epoch
            if bus.stop_training:
                break
        bus.train_end()
        result["learning_rate"] = optimizer.param_groups[0]["lr"]
    except RankTimeoutError as exc:
        result["error"] = {"type": type(exc).__name__, "message": str(exc), "ranks": exc.ranks}
    finally:
        bus.close()
        (out / f"result.rank{rank}.json").write_text(json.dumps(result))
    if "error" not in result:  # a group whose other rank is dead is not waited on
        dist.destroy_process_group()
    os._exit(0)


if __name__ == "__main__":
    main()
