"""Run by test_train.py under ``torch.distributed.run``: trains the micro model with DDP on CPU (Gloo).

Usage: python -m torch.distributed.run --nproc_per_node=2 ... tests/_ddp_worker.py OUT_DIR STEPS BATCH ACCUM
Each rank writes OUT_DIR/rank{r}.json with its history and the checkpoint writes it made.
"""

from __future__ import annotations

import faulthandler
import gc
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from _train_support import make_data, make_model, small_config

import lmlab.train as train

torch.set_num_threads(1)


def main() -> None:
    # a hung collective shows its stack and ends the process instead of stalling the test
    faulthandler.dump_traceback_later(float(os.environ.get("LMLAB_DDP_WATCHDOG", "90")), exit=True)
    out, steps, batch, accum = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    saves: list[str] = []
    real_save = train._atomic_save

    def counting_save(obj, path):
        saves.append(str(path))
        real_save(obj, path)

    train._atomic_save = counting_save
    config = small_config(
        batch_size=batch, grad_accum_steps=accum, max_steps=steps, eval_interval=3, eval_batches=None,
        checkpoint_path=str(out / "ckpt.pt"),
    )  # fmt: skip
    trainer = train.Trainer(make_model(), make_data(), config)
    history = trainer.fit()
    result = {
        "history": list(history),
        "saves": saves,
        "world_size": trainer.world_size,
        "tokens_per_step": trainer.tokens_per_step,
        "initialised": dist.is_initialized(),
        "ddp": type(trainer._train_model).__name__,
    }
    (out / f"rank{os.environ['RANK']}.json").write_text(json.dumps(result))
    del trainer, history  # free DistributedDataParallel while its process group still exists
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
