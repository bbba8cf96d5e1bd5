"""Fresh data: what is read back from a cache is what the file holds now, and a damaged cache is
rebuilt with a warning (DESIGN.md, Guarantees)."""

from __future__ import annotations

import json
import os
import warnings

import datasets
import numpy as np
import pytest

from textbatch import StreamingTextDataset, TextBatchError, TextDataset
from textbatch.data.dataset import load_file
from textbatch.data.hashing import file_digest

OLD = [
    {"text": "The striker scored a late goal in the final minute.", "label": "sports"},
    {"text": "Parliament passed the budget after a long debate.", "label": "politics"},
]
NEW = [  # three rows that fit in the bytes of OLD's two
    {"text": "A new chip doubles battery life.", "label": "tech"},
    {"text": "The coach praised him.", "label": "sports"},
    {"text": "Voters", "label": "politics"},
]


def encode(records, fmt):
    """The bytes of a csv or jsonl file holding ``records``."""
    if fmt == "csv":
        lines = ["text,label", *(f"{json.dumps(r['text'])},{r['label']}" for r in records)]
        return ("\n".join(lines) + "\n").encode()
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def same_size(records, fmt, size):
    """``records`` with the last text lengthened so that the file is exactly ``size`` bytes."""
    records = [dict(r) for r in records]
    missing = size - len(encode(records, fmt))
    assert missing >= 0, "make the new records shorter than the old ones"
    records[-1]["text"] += "s" * missing
    assert len(encode(records, fmt)) == size
    return records


def replace_keeping_size_and_mtime(path, records, fmt):
    """Overwrite ``path`` with ``records`` padded to its size, then give it its old times back
    (what ``cp -p``, ``touch -r`` or rsync do); return the records now in the file."""
    before = path.stat()
    records = same_size(records, fmt, before.st_size)
    path.write_bytes(encode(records, fmt))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    return records


def rows(ds):
    return [ds[i] for i in range(len(ds))]


def expected_rows(records, tokenizer, **options):
    return rows(TextDataset.from_records(records, tokenizer, **options))


def tokenized_cache_file(cache_dir):
    (found,) = cache_dir.glob("tokenized-*.arrow")
    return found


def build_quietly(path, tokenizer, **options):
    """``from_file`` failing on any warning: a valid cache or a fresh build says nothing."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return TextDataset.from_file(path, tokenizer, **options)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_same_size_same_mtime_replacement_is_read_afresh(tokenizer, tmp_path, fmt):
    path = tmp_path / f"data.{fmt}"
    path.write_bytes(encode(OLD, fmt))
    first = TextDataset.from_file(path, tokenizer)
    assert not first.from_cache and rows(first) == expected_rows(OLD, tokenizer)
    assert TextDataset.from_file(path, tokenizer).from_cache

    new = replace_keeping_size_and_mtime(path, NEW, fmt)
    again = TextDataset.from_file(path, tokenizer)
    assert not again.from_cache
    assert len(again) == 3 and again.label_names == ["politics", "sports", "tech"]
    assert rows(again) == expected_rows(new, tokenizer)
    once_more = TextDataset.from_file(path, tokenizer)
    assert once_more.from_cache and rows(once_more) == rows(again)


def test_unlabelled_prediction_data_is_read_afresh(tokenizer, tmp_path):
    """The reported case: `predict` on a replaced file gave the old rows, and fewer of them."""
    path = tmp_path / "data.csv"
    path.write_bytes(encode(OLD, "csv"))
    TextDataset.from_file(path, tokenizer, label=None)
    new = replace_keeping_size_and_mtime(path, NEW, "csv")
    again = TextDataset.from_file(path, tokenizer, label=None)
    assert rows(again) == expected_rows(new, tokenizer, label=None)


def test_the_raw_datasets_cache_is_read_afresh(tmp_path, cache_dir):
    path = tmp_path / "data.jsonl"
    path.write_bytes(encode(OLD, "jsonl"))
    assert load_file(path, cache_dir)["text"] == [r["text"] for r in OLD]
    new = replace_keeping_size_and_mtime(path, NEW, "jsonl")
    assert load_file(path, cache_dir)["text"] == [r["text"] for r in new]
    assert load_file(path)["text"] == [r["text"] for r in new]  # the default cache too


def test_a_stream_reads_what_the_file_holds_now(tokenizer, tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(encode(OLD, "csv"))
    names = ["politics", "sports", "tech"]
    assert len(list(StreamingTextDataset.from_file(path, tokenizer, label_names=names))) == 2
    new = replace_keeping_size_and_mtime(path, NEW, "csv")
    streamed = list(StreamingTextDataset.from_file(path, tokenizer, label_names=names))
    expected = expected_rows(new, tokenizer)
    assert [x["input_ids"] for x in streamed] == [x["input_ids"] for x in expected]


def test_an_unchanged_file_with_a_new_mtime_reads_the_same_rows(tokenizer, tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(encode(OLD, "csv"))
    first = TextDataset.from_file(path, tokenizer)
    os.utime(path, ns=(1, 1))
    again = build_quietly(path, tokenizer)
    assert rows(again) == rows(first)


def test_a_truncated_cache_file_is_rebuilt_with_a_warning(tokenizer, tmp_path, cache_dir):
    path = tmp_path / "data.csv"
    path.write_bytes(encode(NEW, "csv"))
    TextDataset.from_file(path, tokenizer)
    cache_file = tokenized_cache_file(cache_dir)
    data = cache_file.read_bytes()
    cache_file.write_bytes(data[: len(data) // 2])

    with pytest.warns(UserWarning, match=cache_file.name):
        again = TextDataset.from_file(path, tokenizer)
    assert not again.from_cache and rows(again) == expected_rows(NEW, tokenizer)
    rebuilt = build_quietly(path, tokenizer)
    assert rebuilt.from_cache and rows(rebuilt) == rows(again)


def test_flipped_bytes_in_a_cache_file_are_caught(tokenizer, tmp_path, cache_dir):
    path = tmp_path / "data.csv"
    path.write_bytes(encode(NEW, "csv"))
    first = TextDataset.from_file(path, tokenizer)
    cache_file = tokenized_cache_file(cache_dir)
    # Change one token id of the second row in the middle of the stored ids: the file still
    # parses, it just says something else.
    ids = first[1]["input_ids"]
    data = bytearray(cache_file.read_bytes())
    at = bytes(data).find(np.asarray(ids, dtype="<i4").tobytes())
    assert at > 0
    data[at + 4 * 2 : at + 4 * 3] = np.asarray([ids[2] + 1], dtype="<i4").tobytes()
    cache_file.write_bytes(bytes(data))
    damaged = datasets.Dataset.from_file(str(cache_file))
    assert damaged[1]["input_ids"] != ids and damaged[0]["input_ids"] == first[0]["input_ids"]

    with pytest.warns(UserWarning, match=cache_file.name):
        again = TextDataset.from_file(path, tokenizer)
    assert not again.from_cache and rows(again) == expected_rows(NEW, tokenizer)
    assert build_quietly(path, tokenizer).from_cache


def test_a_cache_file_without_its_checksum_is_rebuilt(tokenizer, tmp_path, cache_dir):
    """A run killed after the tokenised file was written, before its checksum was."""
    path = tmp_path / "data.csv"
    path.write_bytes(encode(NEW, "csv"))
    TextDataset.from_file(path, tokenizer)
    cache_file = tokenized_cache_file(cache_dir)
    sidecars = [p for p in cache_dir.iterdir() if p.name.startswith(cache_file.name + ".")]
    assert sidecars
    for sidecar in sidecars:
        sidecar.unlink()
    with pytest.warns(UserWarning, match=cache_file.name):
        again = TextDataset.from_file(path, tokenizer)
    assert not again.from_cache and rows(again) == expected_rows(NEW, tokenizer)
    assert build_quietly(path, tokenizer).from_cache


def test_file_digest_follows_the_bytes_only(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_bytes(b"x" * 3_000_000)
    b.write_bytes(b"x" * 3_000_000)
    assert file_digest(a) == file_digest(b) == file_digest(a, chunk_size=4096)
    b.write_bytes(b"x" * 2_999_999 + b"y")
    assert file_digest(a) != file_digest(b)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_arrow_copy_of_the_file_is_rebuilt(tmp_path, cache_dir, damage):
    """The raw cache too: its rows give the labels, so flipped bytes there would change them."""
    path = tmp_path / "data.jsonl"
    path.write_bytes(encode(NEW, "jsonl"))
    load_file(path, cache_dir)
    (arrow_file,) = (cache_dir / "datasets").rglob("*.arrow")
    data = arrow_file.read_bytes()
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        assert data.count(b"politics") == 1
        data = data.replace(b"politics", b"polities")
    arrow_file.write_bytes(data)
    with pytest.warns(UserWarning, match=arrow_file.name):
        again = load_file(path, cache_dir)
    assert again["label"] == [r["label"] for r in NEW]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_file(path, cache_dir)["label"] == [r["label"] for r in NEW]


def test_a_file_replaced_while_it_is_read_is_refused(tmp_path, cache_dir, monkeypatch):
    import textbatch.data.dataset

    path = tmp_path / "data.jsonl"
    path.write_bytes(encode(OLD, "jsonl"))

    def digest_then_replace(file):
        digest = file_digest(file)
        replace_keeping_size_and_mtime(path, NEW, "jsonl")
        return digest

    monkeypatch.setattr(textbatch.data.dataset, "file_digest", digest_then_replace)
    with pytest.raises(TextBatchError, match="changed while it was being read"):
        load_file(path, cache_dir)
    assert not any((cache_dir / "datasets").iterdir())  # nothing kept under the old digest


def test_a_tokenizer_that_splits_special_tokens_is_not_served_the_other_cache(tokenizer, tmp_path):
    """``split_special_tokens`` is set on the Rust tokenizer per call, not kept in its JSON:
    the cache key once missed it, and "[SEP]" in a text came back as the special token."""
    import copy

    path = tmp_path / "data.csv"
    path.write_text("text,label\nthe goal [SEP] the final,sports\nthe budget,politics\n")
    splitting = copy.deepcopy(tokenizer)
    splitting.split_special_tokens = True
    expected = splitting("the goal [SEP] the final")["input_ids"]
    assert expected != tokenizer("the goal [SEP] the final")["input_ids"]
    assert not TextDataset.from_file(path, tokenizer).from_cache
    split = TextDataset.from_file(path, splitting)
    assert not split.from_cache
    assert list(split[0]["input_ids"]) == expected
    assert TextDataset.from_file(path, splitting).from_cache


def test_from_hf_of_a_replaced_arrow_file_is_tokenised_afresh(tokenizer, tmp_path, cache_dir):
    """datasets' fingerprint of a mapped Arrow file names it by path and time: a file replaced
    by other rows at the same mtime (cp -p, rsync -a, tar x) got the old token ids, with the new
    labels. The cache key now holds the file's content hash."""
    import shutil

    def arrow_file(records, name):
        datasets.Dataset.from_list(records).save_to_disk(tmp_path / name)
        (found,) = (tmp_path / name).glob("*.arrow")
        return found

    old, new = arrow_file(OLD, "old"), arrow_file(NEW[:2], "new")
    path = tmp_path / "data.arrow"
    shutil.copyfile(old, path)
    first = TextDataset.from_hf(
        datasets.Dataset.from_file(str(path)), tokenizer, cache_dir=cache_dir
    )
    assert not first.from_cache and rows(first) == expected_rows(OLD, tokenizer)
    again = TextDataset.from_hf(
        datasets.Dataset.from_file(str(path)), tokenizer, cache_dir=cache_dir
    )
    assert again.from_cache and rows(again) == rows(first)  # the same file still hits the cache
    fingerprint = datasets.Dataset.from_file(str(path))._fingerprint
    before = path.stat()
    shutil.copyfile(new, path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    replaced = datasets.Dataset.from_file(str(path))
    assert replaced._fingerprint == fingerprint  # datasets sees no change
    ds = TextDataset.from_hf(replaced, tokenizer, cache_dir=cache_dir)
    assert not ds.from_cache
    assert rows(ds) == expected_rows(NEW[:2], tokenizer, label_names=ds.label_names)


def test_from_hf_of_a_dataset_whose_arrow_file_is_gone_tokenises_without_caching(
    tokenizer, tmp_path, cache_dir
):
    """The cache key hashes the mapped files; a file deleted since (its rows still readable)
    crashed from_hf with FileNotFoundError."""
    import shutil

    datasets.Dataset.from_list(OLD).save_to_disk(tmp_path / "saved")
    hf = datasets.load_from_disk(str(tmp_path / "saved"))
    shutil.rmtree(tmp_path / "saved")
    ds = TextDataset.from_hf(hf, tokenizer, cache_dir=cache_dir)
    assert not ds.from_cache and rows(ds) == expected_rows(OLD, tokenizer)
    assert not list(cache_dir.glob("tokenized-*"))
