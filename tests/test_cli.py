"""The command line: train a micro run, sample and score it, info, and clear errors."""

import math
import subprocess
import sys

import pytest
import torch

from lmlab.cli import build_parser, load_run, main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    code = main(["train", "--preset", "micro", "--steps", "20", "--batch-size", "4", "--out", str(out),
                 "--no-progress", "--device", "cpu", "--sample-tokens", "20", "--eval-interval", "10"])
    assert code == 0
    return out


def test_train_writes_a_run_that_loads(run_dir, capsys):
    model, tokenizer = load_run(run_dir, device="cpu")
    assert model.config.n_layer == 2 and model.config.vocab_size == tokenizer.vocab_size
    assert not model.training


def test_train_prints_bits_per_character_and_a_sample(tmp_path, capsys):
    main(["train", "--preset", "micro", "--steps", "3", "--batch-size", "2", "--out", str(tmp_path),
          "--no-progress", "--device", "cpu", "--sample-tokens", "10", "--prompt", "def "])
    out = capsys.readouterr().out
    assert "bits per character" in out
    assert "--- sample (temperature 0.8) ---\ndef " in out
    assert "stopped: max_steps after 3 steps" in out


def test_sample_is_reproducible(run_dir, capsys):
    args = ["sample", "--run", str(run_dir), "--prompt", "The ", "--tokens", "30", "--seed", "4", "--device", "cpu"]
    assert main(args) == 0
    first = capsys.readouterr().out
    main(args)
    assert capsys.readouterr().out == first
    main(["sample", "--run", str(run_dir), "--greedy", "--tokens", "5", "--device", "cpu"])
    assert capsys.readouterr().out.count("\n") >= 3


def test_sample_options_reach_the_decoders(run_dir, capsys):
    from lmlab.generation import beam_search, sample

    model, tok = load_run(run_dir, device="cpu")
    prompt = tok.encode("The ")
    assert main(["sample", "--run", str(run_dir), "--tokens", "12", "--seed", "3", "--top-p", "0.9", "--min-p", "0.05",
                 "--repetition-penalty", "1.3", "--num-samples", "2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for seed in (3, 4):  # sample i is drawn with seed + i
        ids = sample(model, prompt, max_new_tokens=12, generator=torch.Generator().manual_seed(seed), temperature=0.8,
                     top_p=0.9, min_p=0.05, repetition_penalty=1.3)
        assert tok.decode(ids) in out
    assert out.count("--- sample (temperature 0.8) ---") == 2

    assert main(["sample", "--run", str(run_dir), "--tokens", "8", "--beams", "3", "--num-return", "2",
                 "--length-penalty", "0", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    hyps = beam_search(model, prompt, num_beams=3, max_new_tokens=8, length_penalty=0.0, num_return_sequences=2)
    for rank, hyp in enumerate(hyps, 1):
        assert f"hypothesis {rank}, score {hyp.score:.4f}" in out and tok.decode(hyp.tokens) in out


def test_sample_option_errors(run_dir, capsys):
    base = ["sample", "--run", str(run_dir), "--tokens", "4", "--device", "cpu"]
    assert main(base + ["--top-p", "1.5"]) == 2
    assert "top_p must be None or a number in (0, 1]" in capsys.readouterr().err
    assert main(base + ["--beams", "2", "--num-return", "3"]) == 2
    assert "num_return_sequences must be an integer in [1, num_beams=2]" in capsys.readouterr().err
    assert main(base + ["--beams", "2", "--num-samples", "2"]) == 2
    assert "--num-samples is for sampling" in capsys.readouterr().err
    assert main(base + ["--num-return", "2"]) == 2
    assert "--num-return is for beam search" in capsys.readouterr().err


def test_score_matches_the_likelihood_module(run_dir, capsys):
    from lmlab.likelihood import evaluate_text

    text = "Return the number of items in a list."
    assert main(["score", "--run", str(run_dir), "--text", text, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    model, tok = load_run(run_dir, device="cpu")
    ev = evaluate_text(model, torch.tensor(tok.encode(text)), n_chars=len(text))
    assert f"{ev.nats_per_token:.4f} nats" in out
    assert f"{ev.bits_per_char:.4f} bits" in out


def test_errors_are_reported_without_a_traceback(run_dir, tmp_path, capsys):
    assert main(["train", "--preset", "huge", "--steps", "1", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "unknown preset 'huge'; known presets: micro, tiny, small, gpt2" in capsys.readouterr().err
    assert main(["train", "--corpus", "no-such-corpus", "--steps", "1", "--no-progress"]) == 2
    assert "python-docs" in capsys.readouterr().err
    assert main(["sample", "--run", str(tmp_path / "missing")]) == 2
    assert "lmlab train --out" in capsys.readouterr().err
    assert main(["score", "--run", str(run_dir), "--text", "\u2603 snowman", "--device", "cpu"]) == 2
    assert "\u2603" in capsys.readouterr().err


def test_every_option_has_help():
    parser = build_parser()
    for sub in parser._subparsers._group_actions[0].choices.values():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"{sub.prog} {action.option_strings or action.dest} has no help"


def test_info_and_python_dash_m():
    out = subprocess.run([sys.executable, "-m", "lmlab", "info"], capture_output=True, text=True, check=True).stdout
    assert "torch" in out and "device (auto)" in out and "widgets front end" in out


def test_bench_train_reports_the_ratio_of_its_own_measurements(capsys):
    from lmlab.bench import bench_train

    result = bench_train("micro", batch_size=2, block_size=8, steps=1, repeats=1, compile_model=False)
    names = list(result.tokens_per_s)
    assert names[0].startswith("lmlab") and names[1].startswith("transformers")
    assert all(v > 0 for v in result.tokens_per_s.values())
    assert result.ratio == result.tokens_per_s[names[0]] / result.tokens_per_s[names[1]]
    assert f"{result.ratio:.3f}x" in result.report() and result.compile_seconds is None
    with pytest.raises(ValueError, match=r"block_size must be in \[1, 32\]"):
        bench_train("micro", block_size=64, steps=1, repeats=1)


@pytest.mark.slow
def test_bench_train_times_the_compiled_model_after_compiling_it():
    from lmlab.bench import bench_train

    result = bench_train("micro", batch_size=2, block_size=8, steps=1, repeats=1)
    name = "lmlab compiled (torch.compile)"
    assert list(result.tokens_per_s)[4] == name and result.tokens_per_s[name] > 0
    assert result.compile_seconds is not None and result.compile_seconds > 0
    ratio = result.tokens_per_s[name] / result.tokens_per_s[list(result.tokens_per_s)[1]]
    assert f"ratio {name} / transformers (attn sdpa, default): {ratio:.3f}x" in result.report()


# ---------------------------------------------------------------------------------------------- errors and resume
def test_user_errors_are_one_line_and_bugs_keep_their_traceback(run_dir, monkeypatch, capsys):
    import lmlab.cli as cli

    def bad_input(*args, **kwargs):
        raise ValueError("--run holds something else")

    monkeypatch.setattr(cli, "load_run", bad_input)
    assert main(["sample", "--run", str(run_dir), "--device", "cpu"]) == 2
    assert capsys.readouterr().err == "lmlab sample: error: --run holds something else\n"

    def bug(*args, **kwargs):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    monkeypatch.setattr(cli, "load_run", bug)
    with pytest.raises(TypeError, match="unsupported operand"):
        main(["sample", "--run", str(run_dir), "--device", "cpu"])


def _write_corpus(path, alphabet: str) -> str:
    path.write_text(" ".join(alphabet[i % len(alphabet):] + alphabet[: i % len(alphabet)] for i in range(400)),
                    encoding="utf-8")  # fmt: skip
    return str(path)


def _train(corpus: str, out, *extra: str) -> int:
    return main(["train", "--corpus", corpus, "--preset", "micro", "--steps", "2", "--batch-size", "2", "--warmup", "1",
                 "--eval-interval", "100", "--out", str(out), "--no-progress", "--device", "cpu",
                 "--sample-tokens", "4", "--prompt", "a", *extra])  # fmt: skip


def test_resume_continues_the_run(tmp_path, capsys):
    corpus = _write_corpus(tmp_path / "a.txt", "abcdefgh")
    out = tmp_path / "run"
    assert _train(corpus, out) == 0
    capsys.readouterr()
    assert _train(corpus, out, "--resume", "--steps", "4") == 0
    text = capsys.readouterr().out
    assert f"resuming {out / 'checkpoint.pt'} at step 2" in text and "stopped: max_steps after 4 steps" in text


def test_resume_checks_the_checkpoint_before_writing_the_tokenizer(tmp_path, capsys):
    corpus = _write_corpus(tmp_path / "a.txt", "abcdefgh")
    out = tmp_path / "run"
    out.mkdir()
    tokenizer_file = out / "tokenizer.json"
    tokenizer_file.write_bytes(b"the run's own tokenizer")
    (out / "checkpoint.pt").write_bytes(b"PK\x03\x04 half a checkpoint")
    assert _train(corpus, out, "--resume") == 2
    assert "is damaged" in capsys.readouterr().err
    assert tokenizer_file.read_bytes() == b"the run's own tokenizer"


def test_resume_with_another_model_or_tokenizer_leaves_the_run_alone(tmp_path, capsys):
    corpus = _write_corpus(tmp_path / "a.txt", "abcdefgh")
    out = tmp_path / "run"
    assert _train(corpus, out, "--tokenizer", "byte") == 0
    tokenizer_file, checkpoint = out / "tokenizer.json", out / "checkpoint.pt"
    saved_tokenizer, saved_checkpoint = tokenizer_file.read_bytes(), checkpoint.read_bytes()
    capsys.readouterr()

    assert _train(corpus, out, "--resume", "--tokenizer", "char") == 2  # vocabulary 256 -> 9: another model
    err = capsys.readouterr().err
    assert "another model" in err and "vocab_size (checkpoint 256, model 9)" in err
    assert tokenizer_file.read_bytes() == saved_tokenizer and checkpoint.read_bytes() == saved_checkpoint

    char_run = tmp_path / "char-run"
    assert _train(corpus, char_run) == 0
    saved_tokenizer = (char_run / "tokenizer.json").read_bytes()
    capsys.readouterr()
    other = _write_corpus(tmp_path / "b.txt", "ijklmnop")  # as many characters, other ones: the same model shape
    assert _train(other, char_run, "--resume") == 2
    assert "holds another tokenizer" in capsys.readouterr().err
    assert (char_run / "tokenizer.json").read_bytes() == saved_tokenizer


def test_bench_attention_prints_time_memory_fits_and_the_sdpa_peer(capsys):
    assert main(["bench", "attention", "--lengths", "32,64", "--kinds", "full", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("attention bench: lmlab GPT of 1 layer(s), n_embd 64, 4 heads")
    assert "child process" in lines[1]  # what the peak memory means
    rows = [line.split() for line in lines if line.startswith("  full ") and "n/a" not in line]
    assert [r[1] for r in rows] == ["32", "64"]
    for r in rows:  # T, forward s, fwd+bwd s, peak MB, estimate MB, GFLOP, GFLOP/s: all finite, >= 0
        values = [float(v) for v in r[1:]]
        assert all(math.isfinite(v) and v >= 0 for v in values) and values[1] > 0 and values[2] > 0
    assert "largest T measured within 4 GB: full 64" in out
    assert "lmlab vs PyTorch's SDPA (the peer)" in out and "speed lmlab/direct" in out


def test_bench_attention_skips_and_errors(capsys):
    assert main(["bench", "attention", "--lengths", "32", "--kinds", "full,linear", "--no-memory",
                 "--memory-limit-gb", "0.000001"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert out.count("skipped: estimated peak") == 2 and "full none, linear none" in out
    assert main(["bench", "attention", "--kinds", "full,sparse"]) == 2
    assert "kind must be one of ('full', 'sliding_window', 'linear'), got 'sparse'" in capsys.readouterr().err
    assert main(["bench", "attention", "--lengths", "0,32", "--no-memory"]) == 2
    assert "lengths must be a non-empty sequence of integers >= 1" in capsys.readouterr().err
