"""Tests of lmlab.text.data: corpora (offline, local files, downloads from a local server) and token batches."""

import dataclasses
import hashlib
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lmlab.lm import IGNORE_INDEX
from lmlab.models import GPT, GPTConfig
from lmlab.text import data as data_mod
from lmlab.text.data import (
    CORPORA,
    CorpusChecksumError,
    CorpusDownloadError,
    CorpusInfo,
    TokenData,
    load_corpus,
    load_data,
    write_bin,
)
from lmlab.text.tokenizer import ByteTokenizer, CharTokenizer


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own empty cache directory and online mode."""
    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LMLAB_OFFLINE", raising=False)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(data_mod.urllib.request, "urlopen", refuse)


# ---------------------------------------------------------------------------------------------- corpora


def test_python_docs_is_offline_large_and_deterministic(no_network):
    text = load_corpus("python-docs")
    assert isinstance(text, str)
    assert len(text) > 300_000
    assert load_corpus("python-docs") == text
    from pydoc_data.topics import topics

    first, last = sorted(topics)[0], sorted(topics)[-1]
    assert text.startswith(topics[first].strip("\n"))
    assert text.rstrip("\n").endswith(topics[last].strip("\n"))
    middle = sorted(topics)[len(topics) // 2]
    assert "\n\n" + topics[middle].strip("\n") + "\n\n" in text  # topics joined by blank lines
    assert not data_mod.cache_dir_default().exists()  # nothing cached


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError) as info:
        load_corpus("tiny-shakspeare")
    msg = str(info.value)
    assert "'tiny-shakspeare'" in msg
    assert "python-docs" in msg and "tiny-shakespeare" in msg
    assert "path" in msg


def test_registry_has_tiny_shakespeare_with_checksum():
    info = CORPORA["tiny-shakespeare"]
    assert info.url == "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
    assert info.sha256 == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def test_local_file(tmp_path):
    path = tmp_path / "my corpus.txt"
    path.write_bytes("To be, or not to be 🙂\r\nthat is the question\n".encode())
    assert load_corpus(path) == "To be, or not to be 🙂\r\nthat is the question\n"  # bytes kept exactly
    assert load_corpus(str(path)) == load_corpus(path)


def test_local_file_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_corpus(empty)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café".encode("latin-1"))
    with pytest.raises(ValueError, match="UTF-8") as info:
        load_corpus(latin1)
    assert "offset 3" in str(info.value)
    with pytest.raises(ValueError, match="not a regular file"):
        load_corpus(tmp_path)
    with pytest.raises(TypeError):
        load_corpus(42)


# ---------------------------------------------------------------------------------------------- downloads

BODY = ("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 500).encode()
BODY_SHA256 = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
def server():
    """A local HTTP server; ``state.mode`` is "ok", "drop" (closes before Content-Length) or "404"."""
    state = SimpleNamespace(body=BODY, mode="ok", requests=0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            state.requests += 1
            if state.mode == "404":
                self.send_error(404)
                return
            self.send_response(200)
            extra = 1000 if state.mode == "drop" else 0
            self.send_header("Content-Length", str(len(state.body) + extra))
            self.end_headers()
            self.wfile.write(state.body)
            self.close_connection = True

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/input.txt"
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _register(monkeypatch, url, sha256=BODY_SHA256):
    info = dataclasses.replace(CORPORA["tiny-shakespeare"], url=url, sha256=sha256)
    monkeypatch.setitem(CORPORA, "tiny-shakespeare", info)
    return info


def _cache_files(tmp_path):
    cache = tmp_path / "cache"
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_download_caches_and_second_call_uses_cache(server, monkeypatch, tmp_path):
    info = _register(monkeypatch, server.url)
    assert load_corpus("tiny-shakespeare") == BODY.decode()
    assert server.requests == 1
    assert (tmp_path / "cache" / info.filename).read_bytes() == BODY
    assert load_corpus("tiny-shakespeare") == BODY.decode()
    assert server.requests == 1  # served from the cache
    assert _cache_files(tmp_path) == [info.filename]
    other = tmp_path / "other"
    assert load_corpus("tiny-shakespeare", cache_dir=other) == BODY.decode()  # cache_dir wins over the env
    assert server.requests == 2
    assert (other / info.filename).read_bytes() == BODY


def test_corrupt_cached_file_is_downloaded_again(server, monkeypatch, tmp_path):
    info = _register(monkeypatch, server.url)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / info.filename).write_bytes(b"half a file")
    assert load_corpus("tiny-shakespeare") == BODY.decode()
    assert server.requests == 1
    assert (tmp_path / "cache" / info.filename).read_bytes() == BODY


def test_wrong_checksum_caches_nothing(server, monkeypatch, tmp_path):
    _register(monkeypatch, server.url, sha256="0" * 64)
    with pytest.raises(CorpusChecksumError) as info:
        load_corpus("tiny-shakespeare")
    assert isinstance(info.value, ValueError)
    assert "0" * 64 in str(info.value) and hashlib.sha256(BODY).hexdigest() in str(info.value)
    assert server.requests == 1
    assert _cache_files(tmp_path) == []  # neither the file nor a temporary one


def test_connection_dropped_mid_file_caches_nothing(server, monkeypatch, tmp_path):
    _register(monkeypatch, server.url)  # the body's checksum is right: only the length check can catch it
    server.mode = "drop"
    with pytest.raises(ConnectionError) as info:
        load_corpus("tiny-shakespeare")
    assert isinstance(info.value, CorpusDownloadError)
    assert _cache_files(tmp_path) == []
    server.mode = "ok"  # a later, complete download works
    assert load_corpus("tiny-shakespeare") == BODY.decode()


def test_http_error_is_a_download_error(server, monkeypatch, tmp_path):
    _register(monkeypatch, server.url)
    server.mode = "404"
    with pytest.raises(CorpusDownloadError, match="404"):
        load_corpus("tiny-shakespeare")
    assert _cache_files(tmp_path) == []


def test_unreachable_server_says_where_to_put_the_file(monkeypatch, tmp_path):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    info = _register(monkeypatch, f"http://127.0.0.1:{port}/input.txt")
    with pytest.raises(ConnectionError) as err:
        load_corpus("tiny-shakespeare")
    msg = str(err.value)
    assert str(tmp_path / "cache" / info.filename) in msg
    assert info.url in msg
    assert "python-docs" in msg
    assert _cache_files(tmp_path) == []


def test_offline_mode_never_downloads(server, monkeypatch, tmp_path):
    info = _register(monkeypatch, server.url)
    with pytest.raises(CorpusDownloadError, match="offline"):
        load_corpus("tiny-shakespeare", offline=True)
    monkeypatch.setenv("LMLAB_OFFLINE", "1")
    with pytest.raises(CorpusDownloadError, match="offline"):
        load_corpus("tiny-shakespeare")
    assert server.requests == 0
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / info.filename).write_bytes(BODY)  # put there by hand
    assert load_corpus("tiny-shakespeare") == BODY.decode()
    assert server.requests == 0


def test_other_registered_corpus(server, monkeypatch):
    info = CorpusInfo(server.url, hashlib.sha256(BODY).hexdigest(), "test.txt", "test corpus")
    monkeypatch.setitem(CORPORA, "test-corpus", info)
    assert load_corpus("test-corpus") == BODY.decode()


# ---------------------------------------------------------------------------------------------- TokenData


def _ranges(n_train=1000, n_val=200):
    """Train ids 0..n_train-1, val ids n_train..n_train+n_val-1: every window can be checked by value."""
    return TokenData(torch.arange(n_train), np.arange(n_train, n_train + n_val), n_train + n_val)


@pytest.mark.parametrize("split", ["train", "val"])
def test_get_batch_shapes_shift_and_bounds(split):
    data = _ranges()
    x, y = data.get_batch(split, 16, 32, generator=torch.Generator().manual_seed(1))
    assert x.shape == y.shape == (16, 32)
    assert x.dtype == y.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:])
    assert torch.equal(y, x + 1)  # consecutive ids: each row is one contiguous window
    lo, hi = (0, 1000) if split == "train" else (1000, 1200)
    assert int(x.min()) >= lo and int(y.max()) < hi  # inside the split


def test_get_batch_reaches_every_start_and_no_further():
    data = TokenData(np.arange(12), np.arange(12), 12)
    x, y = data.get_batch("train", 400, 10, generator=torch.Generator().manual_seed(0))
    assert set(x[:, 0].tolist()) == {0, 1}  # 12 tokens, windows of 10 + 1: starts 0 and 1


def test_get_batch_is_deterministic_given_a_seed():
    data = _ranges()
    a = data.get_batch("train", 8, 16, generator=torch.Generator().manual_seed(123))
    b = data.get_batch("train", 8, 16, generator=torch.Generator().manual_seed(123))
    c = data.get_batch("train", 8, 16, generator=torch.Generator().manual_seed(124))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    torch.manual_seed(5)
    d = data.get_batch("train", 8, 16)
    torch.manual_seed(5)
    assert torch.equal(d[0], data.get_batch("train", 8, 16, device=torch.device("cpu"))[0])


def test_get_batch_errors():
    data = _ranges(n_val=10)
    with pytest.raises(ValueError, match="train"):
        data.get_batch("test", 2, 4)
    with pytest.raises(ValueError, match=">= 1"):
        data.get_batch("train", 0, 4)
    with pytest.raises(ValueError, match=">= 1"):
        data.get_batch("train", 2, 0)
    with pytest.raises(ValueError, match="must be an integer"):
        data.get_batch("train", True, 4)
    with pytest.raises(ValueError, match="must be an integer"):
        data.get_batch("train", 2, 4.0)
    with pytest.raises(ValueError) as info:
        data.get_batch("val", 2, 10)
    msg = str(info.value)
    assert "10 tokens" in msg and "11" in msg and "block_size" in msg and "val_fraction" in msg


def test_token_data_rejects_bad_arrays():
    with pytest.raises(TypeError, match="integer"):
        TokenData(torch.zeros(10), torch.zeros(10, dtype=torch.long), 5)
    with pytest.raises(ValueError, match="1-D"):
        TokenData(np.zeros((2, 5), dtype=np.int64), np.zeros(3, dtype=np.int64), 5)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        TokenData(torch.tensor([0, 5]), torch.tensor([0]), 5)
    with pytest.raises(ValueError, match="vocab_size"):
        TokenData(torch.tensor([0]), torch.tensor([0]), 0)


# ---------------------------------------------------------------------------------------------- iter_split


@pytest.mark.parametrize(
    "n, block_size, batch_size", [(103, 10, 3), (101, 10, 4), (5, 8, 2), (2, 1, 1), (50, 7, 100)]
)
def test_iter_split_scores_every_target_exactly_once(n, block_size, batch_size):
    ids = np.random.default_rng(0).integers(0, 50, size=n)
    data = TokenData(ids, ids[:2], 50)
    scored = Counter()
    batches = list(data.iter_split("train", batch_size, block_size))
    assert len(batches) == data.num_batches("train", batch_size, block_size)
    window = 0
    for x, y in batches:
        assert x.shape == y.shape and x.shape[1] == block_size and 1 <= x.shape[0] <= batch_size
        assert x.dtype == y.dtype == torch.int64
        for r in range(x.shape[0]):
            start = window * block_size
            for c in range(block_size):
                if y[r, c] == IGNORE_INDEX:
                    assert x[r, c] == 0  # padding
                    continue
                pos = start + c + 1  # position of the target in the split
                assert y[r, c] == ids[pos] and x[r, c] == ids[pos - 1]
                scored[pos] += 1
            window += 1
    assert scored == Counter(range(1, n))


def test_iter_split_loss_matches_direct_computation():
    torch.manual_seed(0)
    V, N = 11, 50
    ids = torch.randint(V, (N,))
    model = GPT(GPTConfig.preset("micro", vocab_size=V, block_size=64)).eval()
    data = TokenData(torch.arange(5) % V, ids, V)
    with torch.no_grad():
        one_pass = model(ids[:-1][None], ids[1:][None]).loss  # mean NLL, the whole split in one context
        total, count = 0.0, 0
        for x, y in data.iter_split("val", 3, 64):  # one window, padded to 64
            total += float(model(x, y, reduction="sum").loss)
            count += int((y != IGNORE_INDEX).sum())
        assert count == N - 1
        assert total / count == pytest.approx(float(one_pass), rel=1e-5)

        # short windows in batches: the same as scoring each window on its own, unpadded
        T, total = 8, 0.0
        for x, y in data.iter_split("val", 3, T):
            total += float(model(x, y, reduction="sum").loss)
        reference = 0.0
        for s in range(0, N - 1, T):
            e = min(s + T, N - 1)  # the window reads tokens s..e-1 and predicts s+1..e
            reference += float(model(ids[s:e][None], ids[s + 1 : e + 1][None], reduction="sum").loss)
        assert total == pytest.approx(reference, rel=1e-5)


def test_iter_split_needs_two_tokens():
    data = TokenData(np.arange(1), np.arange(1), 2)
    with pytest.raises(ValueError, match="at least 2"):
        data.iter_split("train", 1, 4)  # raised at the call, not at the first next()


# ---------------------------------------------------------------------------------------------- token files


@pytest.mark.parametrize("vocab_size, dtype, itemsize", [(65536, np.uint16, 2), (100_000, np.uint32, 4)])
def test_write_bin_from_bin_round_trip(tmp_path, vocab_size, dtype, itemsize):
    rng = np.random.default_rng(0)
    train, val = rng.integers(0, vocab_size, 1000), rng.integers(0, vocab_size, 100)
    assert write_bin(tmp_path / "train.bin", train, vocab_size=vocab_size) == np.dtype(dtype)
    write_bin(tmp_path / "val.bin", torch.from_numpy(val), vocab_size=vocab_size)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.bin", "val.bin"]  # no temporary files
    assert (tmp_path / "train.bin").stat().st_size == 1000 * itemsize
    assert np.array_equal(np.fromfile(tmp_path / "train.bin", dtype=np.dtype(dtype).newbyteorder("<")), train)
    data = TokenData.from_bin(tmp_path / "train.bin", tmp_path / "val.bin", vocab_size=vocab_size)
    assert isinstance(data.train, np.memmap) and isinstance(data.val, np.memmap)
    assert data.train.dtype == dtype
    assert np.array_equal(data.train, train) and np.array_equal(data.val, val)
    in_memory = TokenData(train, val, vocab_size)
    for split in ("train", "val"):  # same seed, same batches, from disk or from memory
        a = data.get_batch(split, 4, 16, generator=torch.Generator().manual_seed(3))
        b = in_memory.get_batch(split, 4, 16, generator=torch.Generator().manual_seed(3))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[0].dtype == torch.int64
    pairs = zip(data.iter_split("val", 2, 8), in_memory.iter_split("val", 2, 8), strict=True)
    assert all(torch.equal(a, b) and torch.equal(ay, by) for (a, ay), (b, by) in pairs)


def test_from_bin_errors(tmp_path):
    (tmp_path / "odd.bin").write_bytes(b"\x00\x01\x02")
    write_bin(tmp_path / "ok.bin", [1, 2, 3], vocab_size=256)
    with pytest.raises(ValueError, match="3 bytes, not a multiple of 2"):
        TokenData.from_bin(tmp_path / "odd.bin", tmp_path / "ok.bin", vocab_size=256)
    with pytest.raises(ValueError, match="uint16 or uint32"):
        TokenData.from_bin(tmp_path / "ok.bin", tmp_path / "ok.bin", vocab_size=256, dtype="int8")
    with pytest.raises(ValueError, match="does not fit in uint16"):
        write_bin(tmp_path / "big.bin", [70_000], dtype="uint16")
    assert not (tmp_path / "big.bin").exists()
    write_bin(tmp_path / "wide.bin", np.arange(100), vocab_size=256)
    data = TokenData.from_bin(tmp_path / "wide.bin", tmp_path / "ok.bin", vocab_size=50)  # ids up to 99
    with pytest.raises(ValueError, match="outside the vocabulary"):
        data.get_batch("train", 1, 99)


# ---------------------------------------------------------------------------------------------- from_text


def test_from_text_split_is_contiguous():
    text = "abcdefghij" * 10
    tok = CharTokenizer.from_text(text)
    data = TokenData.from_text(text, tok, val_fraction=0.1)
    assert data.num_tokens("train") == 90 and data.num_tokens("val") == 10
    assert tok.decode(data.train) + tok.decode(data.val) == text
    assert data.vocab_size == 10 and data.tokenizer is tok
    assert data.num_chars("train") == 90
    assert TokenData.from_text(text, tok, val_fraction=0).num_tokens("val") == 0
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            TokenData.from_text(text, tok, val_fraction=bad)
    with pytest.raises(TypeError):
        TokenData.from_text(text, tok, val_fraction=True)


def test_num_chars_byte_tokenizer_counts_characters():
    text = "é" * 10  # 20 bytes
    data = TokenData.from_text(text, ByteTokenizer(), val_fraction=0.25)  # 15 train bytes, 5 val bytes
    assert (data.num_tokens("train"), data.num_tokens("val")) == (15, 5)
    assert data.num_chars("train") == 8  # the 8th character starts at byte 14, in train
    assert data.num_chars("val") == 2


def test_num_chars_other_tokenizers():
    class Doubling:  # two tokens per character
        vocab_size = 256

        def encode(self, text):
            return [b for c in text for b in (ord(c) % 256, 0)]

        def decode(self, ids):
            return "".join(chr(i) for i in ids[::2])

    data = TokenData.from_text("hello world!", Doubling(), val_fraction=0.25)  # 24 tokens: 18 + 6
    assert (data.num_chars("train"), data.num_chars("val")) == (9, 3)
    with pytest.raises(ValueError, match="num_chars"):
        TokenData(np.arange(4), np.arange(4), 4).num_chars("train")
    assert TokenData(np.arange(4), np.arange(4), 4, num_chars={"train": 9, "val": 3}).num_chars("val") == 3


def test_load_data_char_and_byte(tmp_path):
    text = load_corpus("python-docs")
    char = load_data()
    assert isinstance(char.tokenizer, CharTokenizer)
    assert char.num_tokens("train") + char.num_tokens("val") == len(text)
    assert char.num_tokens("val") == int(len(text) * 0.1)
    assert char.num_chars("train") + char.num_chars("val") == len(text)
    byte = load_data("python-docs", tokenizer="byte", val_fraction=0.2)
    assert isinstance(byte.tokenizer, ByteTokenizer) and byte.vocab_size == 256
    assert byte.num_tokens("train") + byte.num_tokens("val") == len(text.encode("utf-8"))
    assert byte.num_chars("train") + byte.num_chars("val") == len(text)
    x, y = byte.get_batch("val", 2, 64, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 64)
    path = tmp_path / "c.txt"
    path.write_text("hello hello hello\n", encoding="utf-8")
    tok = ByteTokenizer()
    assert load_data(path, tokenizer=tok, val_fraction=0.5).tokenizer is tok
    with pytest.raises(ValueError, match="char, byte"):
        load_data(path, tokenizer="words")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_on_cuda():
    data = _ranges()
    x, y = data.get_batch("train", 4, 8, generator=torch.Generator().manual_seed(0), device="cuda")
    cx, cy = data.get_batch("train", 4, 8, generator=torch.Generator().manual_seed(0))
    assert x.device.type == "cuda" and torch.equal(x.cpu(), cx) and torch.equal(y.cpu(), cy)
    xs = [x for x, _ in data.iter_split("val", 4, 8, device="cuda")]
    assert all(x.device.type == "cuda" for x in xs)
