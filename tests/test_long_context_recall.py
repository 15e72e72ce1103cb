"""Lesson 03's recall experiment: models of every kind trained on associative recall, results on disk."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from lmlab.lessons.long_context.recall import (
    RECALL_KINDS,
    RecallSetup,
    decoding_state_bytes,
    load_recall_results,
    recall_model,
    recall_sweep,
    recall_table,
    train_recall,
)

TINY = RecallSetup(vocab_size=16, seq_len=12, n_embd=16, n_layer=1, n_head=2, window=3, steps=8, batch_size=8,
                   warmup_steps=2, n_eval=32)  # fmt: skip


def test_state_bytes_follow_what_each_kind_keeps():
    s = replace(TINY, n_layer=2)
    L, d, T, w, nh, hs = 2, 16, 12, 3, 2, 8
    expected = {
        "full": 2 * L * T * d * 4,  # keys and values of every position, every layer, float32
        "sliding_window": 2 * L * (w - 1) * d * 4,  # only the last w - 1 positions
        "linear": L * nh * (hs * hs + hs) * 4,  # S (hs, hs) and z (hs,) per head
        "gru": L * d * 4,  # one hidden vector per layer
        "lstm": 2 * L * d * 4,  # hidden and cell vectors
    }
    for kind in RECALL_KINDS:
        torch.manual_seed(0)
        assert decoding_state_bytes(recall_model(kind, s), T) == expected[kind], kind


def test_a_run_is_deterministic_and_records_what_it_measured():
    a = train_recall("linear", 2, TINY)
    b = train_recall("linear", 2, TINY)
    assert (a.accuracy, a.final_loss, a.params) == (b.accuracy, b.final_loss, b.params)
    assert 0 <= a.accuracy <= 1 and a.chance == pytest.approx(1 / 8)  # ids 1..7 keys, 8..15 values
    assert a.kind == "linear" and a.num_pairs == 2 and a.min_distance == 1 and a.seconds > 0


def test_training_long_enough_beats_chance():
    setup = replace(TINY, seq_len=8, steps=150, batch_size=16, lr=5e-3, n_layer=2, warmup_steps=10)
    result = train_recall("full", 2, setup)
    assert result.accuracy > 3 * result.chance


def test_the_sweep_writes_resumes_and_reads_back(tmp_path, monkeypatch):
    path = tmp_path / "sweep.json"
    first = recall_sweep(["full", "gru"], [2], TINY, path=path, command="test")
    record = json.loads(path.read_text())
    assert record["command"] == "test" and len(record["results"]) == 2
    calls = []
    import lmlab.lessons.long_context.recall as recall

    real = recall.train_recall
    monkeypatch.setattr(recall, "train_recall", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = recall_sweep(["full", "gru", "linear"], [2], TINY, path=path, command="test2")
    assert [c[0] for c in calls] == ["linear"], "runs already on disk are not repeated"
    loaded = load_recall_results(path)
    assert loaded["command"] == "test && test2", "the file says every command that added runs"
    assert loaded["setup"] == TINY and loaded["results"][:2] == first and len(again) == 3
    table = recall_table(loaded["results"])
    assert table.splitlines()[0].split("|")[1].split() == ["pairs", "2"]
    assert [line.split("|")[0].strip() for line in table.splitlines()[1:]] == ["full", "linear", "gru"]


def test_a_changed_setup_starts_afresh(tmp_path):
    path = tmp_path / "sweep.json"
    recall_sweep(["gru"], [2], TINY, path=path)
    other = replace(TINY, seed=1)
    results = recall_sweep(["gru"], [2], other, path=path)
    assert len(results) == 1 and load_recall_results(path)["setup"] == other


def test_the_committed_results_say_how_they_were_made():
    record = load_recall_results()
    assert record["command"].startswith("python -m lmlab.lessons.long_context.recall")
    kinds = {r.kind for r in record["results"]}
    assert {"full", "sliding_window", "linear", "gru"} <= kinds
    for r in record["results"]:
        assert 0 <= r.accuracy <= 1 and r.chance == pytest.approx(1 / (record["setup"].vocab_size // 2))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: recall_model("mamba", TINY), "kind must be one of"),
        (lambda: replace(TINY, steps=0), "steps must be an integer >= 1"),
        (lambda: replace(TINY, lr=2.0), "lr must be a number in"),
        (lambda: replace(TINY, n_embd=15), "divisible by n_head"),
        (lambda: recall_table([], by="kind"), "by must be"),
    ],
)
def test_bad_input_says_what_is_allowed(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_a_file_of_another_format_is_refused(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a recall sweep file"):
        load_recall_results(path)
