"""Command line: ``lmlab train | sample | score | bench | info`` (also ``python -m lmlab``).

``lmlab train`` with no arguments is the main job: it trains the ``tiny`` GPT on the built-in
``python-docs`` corpus (about a minute on two CPU cores), saves the run to ``runs/tiny``, prints a sample
and the validation bits per character.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

DEFAULT_RUN = "runs/tiny"
CHECKPOINT_NAME = "checkpoint.pt"
TOKENIZER_NAME = "tokenizer.json"
# exceptions that mean bad input (arguments, files, corpus downloads): one line on stderr and exit status 2
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, ConnectionError)


# ---------------------------------------------------------------------------------------------- runs
def save_tokenizer_for_run(tokenizer: Any, run_dir: Path) -> None:
    """Write ``tokenizer`` to ``run_dir/tokenizer.json`` (creating the directory)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(run_dir / TOKENIZER_NAME)


def check_run_tokenizer(tokenizer: Any, run_dir: Path) -> None:
    """ValueError if ``run_dir`` already holds a tokenizer other than ``tokenizer``.

    A resumed run must keep the token ids its checkpoint was trained with: another corpus can give a
    character tokenizer of the same size but other characters, which the model config cannot tell apart.
    A tokenizer file that cannot be read is not compared (the run's own one replaces it).
    """
    from lmlab.text.tokenizer import load_tokenizer

    path = run_dir / TOKENIZER_NAME
    if not path.is_file():
        return
    try:
        saved = load_tokenizer(path).to_dict()
    except (ValueError, KeyError, OSError):
        return
    if saved != tokenizer.to_dict():
        raise ValueError(
            f"{path} holds another tokenizer than the one built from this corpus and --tokenizer, so the "
            f"checkpoint's token ids would mean other text; resume with the corpus and tokenizer the run was "
            f"trained with, or train into another --out"
        )


def load_run(run_dir: str | os.PathLike[str], device: str = "auto") -> tuple[Any, Any]:
    """Model and tokenizer of a run directory written by ``lmlab train``: ``(GPT in eval mode, tokenizer)``."""
    from lmlab.device import resolve_device
    from lmlab.models import GPT, GPTConfig
    from lmlab.text.tokenizer import load_tokenizer
    from lmlab.train import load_checkpoint

    run = Path(run_dir)
    ckpt_path, tok_path = run / CHECKPOINT_NAME, run / TOKENIZER_NAME
    if not ckpt_path.is_file() or not tok_path.is_file():
        raise FileNotFoundError(
            f"{run} is not a finished run: it needs {CHECKPOINT_NAME} and {TOKENIZER_NAME}; "
            f"train one with: lmlab train --out {run}"
        )
    dev = resolve_device(device)
    ckpt = load_checkpoint(ckpt_path, map_location=dev)
    model = GPT(GPTConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model.to(dev).eval(), load_tokenizer(tok_path)


# ---------------------------------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> int:
    from lmlab.likelihood import evaluate_text
    from lmlab.models import GPT, GPTConfig
    from lmlab.text.data import load_data
    from lmlab.train import TrainConfig, Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_data(args.corpus, tokenizer=args.tokenizer, val_fraction=args.val_fraction)
    torch.manual_seed(args.seed)
    overrides = {"vocab_size": data.vocab_size}
    if args.block_size:
        overrides["block_size"] = args.block_size
    model = GPT(GPTConfig.preset(args.preset, **overrides))
    run = Path(args.out)
    ckpt_path = run / CHECKPOINT_NAME
    budgets = dict(max_steps=args.steps, max_tokens=args.tokens, max_seconds=args.seconds)
    if all(v is None for v in budgets.values()):
        budgets["max_steps"] = args.default_steps
    config = TrainConfig(
        **budgets,
        batch_size=args.batch_size,
        lr=args.lr,
        min_lr=args.lr / 10,
        warmup_steps=args.warmup if args.warmup is not None else min(50, max(1, (args.steps or 500) // 10)),
        eval_interval=args.eval_interval,
        device=args.device,
        seed=args.seed,
        checkpoint_path=str(ckpt_path),
        resume=args.resume,
        progress=not args.no_progress,
    )
    trainer = Trainer(model, data, config)
    resuming = args.resume and ckpt_path.is_file()
    if resuming:  # check the run before anything in it changes
        trainer.restore(ckpt_path)  # ValueError for a damaged checkpoint or one of another model
        check_run_tokenizer(data.tokenizer, run)
    save_tokenizer_for_run(data.tokenizer, run)
    print(
        f"training {args.preset} ({model.num_params(non_embedding=False):,} parameters) on {args.corpus}: "
        f"{data.num_tokens('train'):,} train / {data.num_tokens('val'):,} val tokens, "
        f"vocabulary {data.vocab_size}" + (f"; resuming {ckpt_path} at step {trainer.step}" if resuming else ""),
        flush=True,
    )
    history = trainer.fit()
    model.eval()
    val_ids = data.ids("val")
    print(f"stopped: {history.stop_reason} after {trainer.step} steps, {trainer.tokens:,} tokens, "
          f"{trainer.elapsed:.1f} s; checkpoint in {ckpt_path}")
    if len(val_ids) > 1:
        ev = evaluate_text(model, val_ids, n_chars=data.num_chars("val"))
        print(f"validation: {ev.nats_per_token:.4f} nats/token, perplexity {ev.perplexity:.2f}, "
              f"{ev.bits_per_char:.3f} bits per character")
    _print_sample(model, data.tokenizer, args.prompt, args.sample_tokens, args.seed, temperature=0.8)
    return 0


def _print_sample(model: Any, tokenizer: Any, prompt: str, n: int, seed: int, temperature: float,
                  top_k: int | None = None, **options: Any) -> None:
    """Print one sample of ``n`` new tokens; ``options`` are further warp options (top_p, min_p, ...)."""
    from lmlab.generation import sample

    prompt_ids = tokenizer.encode(prompt) or tokenizer.encode("\n")
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    ids = sample(model, prompt_ids, max_new_tokens=n, generator=gen, temperature=temperature, top_k=top_k, **options)
    print(f"--- sample (temperature {temperature}) ---")
    print(tokenizer.decode(ids))
    print("---")


def cmd_sample(args: argparse.Namespace) -> int:
    from lmlab.generation import beam_search

    model, tokenizer = load_run(args.run, device=args.device)
    if args.beams is not None:  # deterministic: the best hypotheses, with their length-normalised scores
        if args.num_samples != 1:
            raise ValueError("--num-samples is for sampling; with --beams use --num-return (at most --beams)")
        prompt_ids = tokenizer.encode(args.prompt) or tokenizer.encode("\n")
        hyps = beam_search(model, prompt_ids, num_beams=args.beams, max_new_tokens=args.tokens,
                           length_penalty=args.length_penalty, num_return_sequences=args.num_return)
        for rank, hyp in enumerate(hyps, 1):
            print(f"--- beam search, {args.beams} beams: hypothesis {rank}, score {hyp.score:.4f}, "
                  f"log p {hyp.logprob:.3f} ---")
            print(tokenizer.decode(hyp.tokens))
        print("---")
        return 0
    if args.num_return != 1:
        raise ValueError("--num-return is for beam search (--beams); for several samples use --num-samples")
    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be at least 1, got {args.num_samples}")
    temperature = 0.0 if args.greedy else args.temperature
    for i in range(args.num_samples):  # sample i uses seed + i: each is reproducible on its own
        _print_sample(model, tokenizer, args.prompt, args.tokens, args.seed + i, temperature, args.top_k,
                      top_p=args.top_p, min_p=args.min_p, repetition_penalty=args.repetition_penalty)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from lmlab.likelihood import evaluate_text
    from lmlab.text.data import load_corpus

    model, tokenizer = load_run(args.run, device=args.device)
    if args.text is not None:
        text, what = args.text, "the given text"
    else:
        text, what = load_corpus(args.corpus), f"corpus {args.corpus}"
    ids = tokenizer.encode(text)
    if len(ids) < 2:
        raise ValueError("the text is too short to score: it needs at least two tokens")
    ev = evaluate_text(model, torch.tensor(ids), n_chars=len(text), n_bytes=len(text.encode("utf-8")))
    print(f"scored {what}: {ev.n_tokens:,} tokens after the first, {len(text):,} characters")
    print(f"  total NLL      {ev.total_nats:,.2f} nats ({ev.total_nats / math.log(2):,.2f} bits)")
    print(f"  per token      {ev.nats_per_token:.4f} nats, perplexity {ev.perplexity:.3f}")
    print(f"  per character  {ev.bits_per_char:.4f} bits;  per byte {ev.bits_per_byte:.4f} bits")
    return 0


def _int_list(text: str) -> tuple[int, ...]:
    """"64,128,256" -> (64, 128, 256); an empty string gives ()."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err


def _name_list(text: str) -> tuple[str, ...]:
    """"full,linear" -> ("full", "linear")."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def cmd_bench(args: argparse.Namespace) -> int:
    from lmlab.bench import bench_attention, bench_decode, bench_speculative, bench_sweep, bench_train

    if args.what == "sweep":
        result = bench_sweep(quick=args.quick, workers=args.workers)
    elif args.what == "attention":
        result = bench_attention(
            args.lengths or None,
            args.kinds,
            window=args.window,
            attention_impl=args.impl,
            memory_limit_gb=args.memory_limit_gb,
            repeats=args.repeats if args.repeats is not None else 3,
            memory=not args.no_memory,
            peer=not args.no_peer,
            threads=args.threads,
            device=args.device,
            timeout_s=args.timeout,
        )
    elif args.what == "speculative":
        result = bench_speculative(
            args.heads,
            train_steps=args.train_steps,
            new_tokens=args.new_tokens,
            prompt_len=args.prompt_len,
            repeats=args.repeats if args.repeats is not None else 5,
            threads=args.threads,
            device=args.device,
            quick=args.quick,
        )
    elif args.what == "train":
        result = bench_train(
            args.preset,
            batch_size=args.batch_size,
            block_size=args.block_size,
            steps=args.steps,
            repeats=args.repeats if args.repeats is not None else 9,
            threads=args.threads,
            device=args.device,
            compile_model=not args.no_compile,
        )
    else:
        result = bench_decode(
            tuple(s for s in args.shapes.split(",") if s),
            greedy_tokens=args.greedy_tokens,
            beam_tokens=args.beam_tokens,
            num_beams=args.num_beams,
            prompt_len=args.prompt_len,
            cache_lengths=args.cache_lengths,
            repeats=args.repeats if args.repeats is not None else 5,
            cache_repeats=args.cache_repeats,
            threads=args.threads,
            device=args.device,
            num_samples=args.num_samples,
            compile_step=not args.no_compile,
        )
    print(result.report())
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import lmlab
    from lmlab.device import resolve_device
    from lmlab.jupyterenv import check_jupyter

    def version_of(name: str) -> str:
        try:
            from importlib.metadata import version

            return version(name)
        except Exception:
            return "not installed"

    print(f"lmlab          {lmlab.__version__}")
    print(f"python         {platform.python_version()} ({platform.platform()})")
    for name in ("torch", "numpy", "tqdm", "transformers", "jupyterlab", "ipywidgets", "nbgrader"):
        print(f"{name:15}{version_of(name)}")
    print(f"device (auto)  {resolve_device('auto')}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            print(f"  cuda:{i}       {torch.cuda.get_device_name(i)}")
    print(f"torch threads  {torch.get_num_threads()} (CPU cores: {os.cpu_count()})")
    print_jupyter(check_jupyter(args.jupyter_lab))
    print_course_start(Path.cwd())
    return 0


def print_jupyter(check) -> None:  # noqa: ANN001  (a lmlab.jupyterenv.JupyterCheck)
    """The course's half of `lmlab info`: what the JupyterLab that opens the notebooks has installed."""
    from lmlab.jupyterenv import NBGRADER_EXTENSION, VALIDATE_SERVER_EXTENSION, WIDGETS_EXTENSION

    print(f"jupyter lab    {check.jupyter_lab or 'not found'}")
    if check.jupyter_lab is not None and not check.error:
        for label, name in (("widgets front end", WIDGETS_EXTENSION), ("nbgrader (Lab)", NBGRADER_EXTENSION)):
            ext = check.lab_extensions.get(name)
            state = "not installed" if ext is None else (
                f"{ext.version}, " + ("disabled" if not ext.enabled or name in check.disabled else
                                      "enabled" if ext.ok else "enabled but broken"))
            print(f"  {label:19}{name}: {state}")
        server = check.server_extensions.get(VALIDATE_SERVER_EXTENSION)
        state = "not installed" if server is None else "enabled" if server else "disabled or broken"
        print(f"  {'nbgrader (server)':19}{VALIDATE_SERVER_EXTENSION}: {state}")
    for line in check.advice():
        print(f"  to fix: {line}")
    if check.jupyter_lab is not None and not check.advice():
        print("  widgets and nbgrader's Validate button will work in this JupyterLab")


def print_course_start(folder: Path) -> None:
    """Where a student starts, when `folder` is a checkout of the course (it has course/syllabus.md)."""
    first = sorted(folder.glob("notebooks/*/*.ipynb"))
    if (folder / "course" / "syllabus.md").is_file() and first:
        start = first[0].relative_to(folder)
        print(f"course         start with {start} (the lessons in order: course/syllabus.md)")
        print(f"               open it: jupyter lab {start}")


# ---------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lmlab", description="Train, sample, score and benchmark small GPTs.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{train,sample,score,bench,info}")

    t = sub.add_parser("train", help="train a GPT on a corpus (default: tiny on python-docs, about a minute)")
    t.add_argument("--corpus", default="python-docs",
                   help="corpus name (python-docs, tiny-shakespeare) or a path to a UTF-8 text file")
    t.add_argument("--tokenizer", default="char", choices=["char", "byte"], help="tokenizer kind")
    t.add_argument("--preset", default="tiny", help="model preset: micro, tiny, small or gpt2")
    t.add_argument("--block-size", type=int, default=None, help="context length (default: the preset's)")
    t.add_argument("--steps", type=int, default=None, help="stop after this many optimizer steps")
    t.add_argument("--tokens", type=int, default=None, help="stop after this many training tokens")
    t.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    t.add_argument("--batch-size", type=int, default=16, help="sequences per step")
    t.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (cosine decay to lr/10)")
    t.add_argument("--warmup", type=int, default=None,
                   help="linear warmup steps (default: 50, or a tenth of --steps when that is smaller)")
    t.add_argument("--eval-interval", type=int, default=200, help="evaluate on the val split every N steps")
    t.add_argument("--val-fraction", type=float, default=0.1, help="share of the corpus held out for validation")
    t.add_argument("--out", default=DEFAULT_RUN, help="run directory for the checkpoint and tokenizer")
    t.add_argument("--resume", action="store_true", help="continue the run in --out if it has a checkpoint")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    t.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch (default: PyTorch's)")
    t.add_argument("--seed", type=int, default=0, help="random seed (initialisation, batches, sample)")
    t.add_argument("--prompt", default="The ", help="prompt of the sample printed at the end")
    t.add_argument("--sample-tokens", type=int, default=300, help="length of that sample in tokens")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train, default_steps=1000)

    s = sub.add_parser("sample", help="generate text from a trained run")
    s.add_argument("--run", default=DEFAULT_RUN, help="run directory written by lmlab train")
    s.add_argument("--prompt", default="The ", help="text to continue")
    s.add_argument("--tokens", type=int, default=300, help="number of new tokens")
    s.add_argument("--temperature", type=float, default=0.8, help="softmax temperature (0 = greedy)")
    s.add_argument("--top-k", type=int, default=None, help="sample only from the k most probable tokens")
    s.add_argument("--top-p", type=float, default=None,
                   help="sample only from the most probable tokens whose probabilities add up to p (nucleus)")
    s.add_argument("--min-p", type=float, default=None,
                   help="drop tokens less probable than min-p times the most probable one")
    s.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="> 1 lowers the logits of tokens already in the text (1: off)")
    s.add_argument("--greedy", action="store_true", help="always take the most probable token")
    s.add_argument("--num-samples", type=int, default=1, help="number of samples, with seeds seed, seed+1, ...")
    s.add_argument("--beams", type=int, default=None,
                   help="beam search with this many beams instead of sampling (deterministic)")
    s.add_argument("--length-penalty", type=float, default=1.0,
                   help="beam search: score = log p / length**penalty (0: plain log p, > 0 favours long texts)")
    s.add_argument("--num-return", type=int, default=1, help="beam search: hypotheses to print, best first")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    s.set_defaults(func=cmd_sample)

    c = sub.add_parser("score", help="log-likelihood, perplexity and bits per character of a text")
    c.add_argument("--run", default=DEFAULT_RUN, help="run directory written by lmlab train")
    src = c.add_mutually_exclusive_group()
    src.add_argument("--text", default=None, help="the text to score")
    src.add_argument("--corpus", default="python-docs", help="a corpus name or text file to score whole")
    c.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    c.set_defaults(func=cmd_score)

    b = sub.add_parser("bench", help="benchmarks against a named peer, printing ratios")
    b.add_argument("what", choices=["train", "decode", "attention", "sweep", "speculative"],
                   help="train: lmlab vs transformers GPT2LMHeadModel training steps; decode: lmlab.generation vs "
                        "transformers generate (greedy, beam search, batched samples, a compiled step) and generation "
                        "with vs without the KV cache; attention: time and memory by attention kind as the sequence "
                        "grows, fitted exponents, and lmlab's attention layer vs PyTorch's SDPA; sweep: a scaling "
                        "sweep in one process vs parallel workers (runs per minute, overhead between runs, GFLOP/s "
                        "of the smallest and largest model vs a one-thread matmul); speculative: self-speculative "
                        "greedy decoding of multi-token models (2, 3, 4 heads, briefly trained) vs plain greedy")
    b.add_argument("--preset", default="tiny", help="train: model shape")
    b.add_argument("--batch-size", type=int, default=12, help="train: sequences per step")
    b.add_argument("--block-size", type=int, default=None, help="train: tokens per sequence (default: the preset's)")
    b.add_argument("--steps", type=int, default=10, help="train: steps per timed repeat")
    b.add_argument("--shapes", default="tiny,small",
                   help="decode: comma-separated preset shapes to compare with transformers (empty: none)")
    b.add_argument("--greedy-tokens", type=int, default=200, help="decode: new tokens of the greedy run")
    b.add_argument("--beam-tokens", type=int, default=64, help="decode: new tokens of the beam search run")
    b.add_argument("--num-beams", type=int, default=4, help="decode: beams of the beam search run")
    b.add_argument("--prompt-len", type=int, default=16, help="decode: tokens in the (random) prompt")
    b.add_argument("--cache-lengths", type=_int_list, default=(64, 128, 256, 512, 1024),
                   help="decode: comma-separated output lengths for the with/without KV cache comparison "
                        "(empty: skip it)")
    b.add_argument("--num-samples", type=int, default=16,
                   help="decode: samples of one prompt drawn together (sample_batch vs num_return_sequences)")
    b.add_argument("--no-compile", action="store_true",
                   help="skip the rows of compiled models (train: the whole model; decode: the one-token step); "
                        "compiling takes about half a minute")
    b.add_argument("--cache-repeats", type=int, default=3,
                   help="decode: repeats of the KV cache comparison (its uncached runs are slow)")
    b.add_argument("--lengths", type=_int_list, default=None,
                   help="attention: comma-separated sequence lengths (default: 256,512,...,16384 on the CPU, "
                        "to 131072 on a GPU)")
    b.add_argument("--kinds", type=_name_list, default=("full", "sliding_window", "linear"),
                   help="attention: comma-separated attention kinds (default: full,sliding_window,linear)")
    b.add_argument("--window", type=int, default=256, help="attention: positions each query of the sliding window sees")
    b.add_argument("--impl", default="sdpa", choices=["sdpa", "naive", "auto"],
                   help="attention: lmlab's attention_impl (naive: explicit T x T matrices)")
    b.add_argument("--memory-limit-gb", type=float, default=None,
                   help="attention: skip lengths whose estimated peak memory exceeds this many GB (10^9 bytes; "
                        "default: 4 on the CPU, 90%% of the GPU's memory)")
    b.add_argument("--no-memory", action="store_true",
                   help="attention: time only, in this process (no child process per length, no peak memory)")
    b.add_argument("--no-peer", action="store_true", help="attention: skip the comparison with PyTorch's SDPA")
    b.add_argument("--timeout", type=float, default=600.0,
                   help="attention: seconds one length may take before its run is stopped and reported")
    b.add_argument("--repeats", type=int, default=None,
                   help="interleaved repeats, the median is reported (default: 9 for train, 5 for decode, 3 for "
                        "attention)")
    b.add_argument("--quick", action="store_true", help="sweep: a tiny grid of 4 runs (seconds), for tests")
    b.add_argument("--workers", type=int, default=2,
                   help="sweep: processes of the parallel sweep, against one process (1: a repeat of it)")
    b.add_argument("--heads", type=_int_list, default=(2, 3, 4),
                   help="speculative: comma-separated numbers of heads, one trained model each (default: 2,3,4); "
                        "with --quick the speculative bench shrinks to seconds, for tests")
    b.add_argument("--train-steps", type=int, default=100,
                   help="speculative: training steps of each model on the Markov language")
    b.add_argument("--new-tokens", type=int, default=64,
                   help="speculative: tokens generated per prompt (the models' block_size is prompt + this)")
    b.add_argument("--threads", type=int, default=2,
                   help="CPU threads for PyTorch (not sweep: each of its runs trains on 1 thread)")
    b.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    b.set_defaults(func=cmd_bench)

    i = sub.add_parser("info", help="versions, device, threads; whether JupyterLab has the widgets front end "
                                    "and nbgrader's Validate button, and what to install if not")
    i.add_argument("--jupyter-lab", default=None, metavar="PATH",
                   help="the jupyter-lab to check (default: the one beside this Python, else the first on PATH)")
    i.set_defaults(func=cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as err:  # anything else is a bug: its traceback shows
        print(f"lmlab {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
