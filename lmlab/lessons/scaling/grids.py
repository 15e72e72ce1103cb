"""The precomputed grids of lesson 04: every shape at every FLOP budget, trained by :mod:`lmlab.scaling`.

Two grids, each committed with the command, machine and time that made it (a student short of time fits
these instead of, or beside, the grid run live in the lesson):

- ``"markov"``: the Markov language of 256 words (order 1) whose entropy rate is known, so the fitted
  irreducible loss E can be set against the truth;
- ``"corpus"``: the built-in corpus, character-level.

Command: ``python -m lmlab.lessons.scaling.grids markov`` (or ``corpus``; ``--workers 2`` to train two runs
at once, ``--out FILE`` to write elsewhere). A killed run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lmlab.scaling import CorpusData, MarkovData, ModelShape, SweepConfig, SweepRecord, load_sweep, run_sweep

__all__ = ["GRIDS", "GRID_PATHS", "load_grid", "main"]

_HERE = Path(__file__).parent
# widths 24 to 128, 2 to 4 layers: about 14 thousand to 0.8 million non-embedding parameters
SHAPES = (
    ModelShape(2, 24, 2),
    ModelShape(2, 32, 2),
    ModelShape(2, 48, 2),
    ModelShape(3, 64, 4),
    ModelShape(4, 96, 4),
    ModelShape(4, 128, 4),
)
BUDGETS = (1e11, 3e11, 1e12, 3e12, 1e13)  # training FLOPs (the Trainer's count: 6N plus attention, per token)
_COMMON = dict(shapes=SHAPES, budgets=BUDGETS, budget_kind="flops", block_size=64, batch_size=32, lr=3e-3,
               warmup_steps=20, min_steps=100, seed=0, threads=1)  # fmt: skip

GRIDS = {
    "markov": SweepConfig(data=MarkovData(vocab_size=256, order=1, seed=0, n_train=4_000_000, n_val=100_000),
                          **_COMMON),  # fmt: skip
    "corpus": SweepConfig(data=CorpusData("python-docs", tokenizer="char"), **_COMMON),
}
GRID_PATHS = {name: _HERE / f"{name}_grid.jsonl" for name in GRIDS}


def load_grid(name: str) -> tuple[dict, list[SweepRecord]]:
    """The committed grid ``name`` ("markov" or "corpus"): its header (setup, command, machine) and records."""
    if name not in GRIDS:
        raise ValueError(f"name must be one of {sorted(GRIDS)}, got {name!r}")
    return load_sweep(GRID_PATHS[name])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lmlab.lessons.scaling.grids", description=__doc__.split("\n")[0])
    p.add_argument("grid", choices=sorted(GRIDS))
    p.add_argument("--workers", type=int, default=1, help="runs trained at once, one process each")
    p.add_argument("--out", default=None, help="file to write (default: the committed grid file)")
    args = p.parse_args(argv)
    path = Path(args.out) if args.out else GRID_PATHS[args.grid]
    command = "python -m lmlab.lessons.scaling.grids " + " ".join(sys.argv[1:] if argv is None else argv)
    records = run_sweep(GRIDS[args.grid], path, workers=args.workers, command=command)
    print(f"{len(records)} runs in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
