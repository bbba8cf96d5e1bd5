"""What keying caches by content costs: hashing a data file vs tokenising it.

Writes a file of text lines from the embedded corpus (1 GB by default) to a temporary folder,
times hashing it with XXH3-128 (``textbatch.data.hashing.file_digest``, what the caches use)
and with
BLAKE2b, cold-ish (its pages dropped from the page cache first) and warm (best of several), and
compares that with tokenising: ``TextDataset.from_records`` and the tokenizer's ``encode_batch`` on
a sample of the same lines, with a WordPiece tokenizer trained on the corpus, scaled to the file.
It also times a from_file build and a cached reload of the sample, the reload including the
checks of every cache file against its checksum. Everything it writes is deleted afterwards.
Run: python benchmarks/hashing.py [--gigabytes 1] [--sample-megabytes 20] [--out FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from _common import best_time, save

from textbatch import TextDataset, train_tokenizer
from textbatch.data.corpus import make_corpus
from textbatch.data.hashing import CHUNK_SIZE, file_digest

MB = 1_000_000


def blake2b_digest(path: Path, chunk_size: int = CHUNK_SIZE) -> str:
    """BLAKE2b (128-bit) of a file, read the same way as ``file_digest``."""
    digest = hashlib.blake2b(digest_size=16)
    buffer = bytearray(chunk_size)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def write_lines(path: Path, lines: list[str], size: int) -> int:
    """Write ``lines`` over and over until the file holds at least ``size`` bytes; its size."""
    block = ("\n".join(lines) + "\n").encode()
    with open(path, "wb") as f:
        for _ in range(-(-size // len(block))):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    return path.stat().st_size


def first_megabytes(lines: list[str], megabytes: float) -> list[str]:
    """The lines, repeated as needed, up to about ``megabytes`` MB of text."""
    out: list[str] = []
    size = 0
    while size < megabytes * MB:
        line = lines[len(out) % len(lines)]
        out.append(line)
        size += len(line.encode()) + 1
    return out


def drop_from_page_cache(path: Path) -> None:
    """Ask the kernel to forget the file's cached pages (no root needed): the next read is cold-ish
    (the disk's own cache and read-ahead still help)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cold_and_warm(fn: Callable[[Path], str], path: Path, repeats: int) -> dict[str, float]:
    drop_from_page_cache(path)
    cold = best_time(lambda: fn(path), repeats=1)
    return {"cold_s": cold, "warm_s": best_time(lambda: fn(path), repeats)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=1.0, help="size of the hashed file")
    parser.add_argument("--sample-megabytes", type=float, default=20.0, help="tokenised sample")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="JSON file (default benchmarks/results/hashing.json)")
    args = parser.parse_args()

    lines = [r["text"] for r in make_corpus(20_000, seed=0)]
    tokenizer = train_tokenizer(lines, vocab_size=8000)
    with tempfile.TemporaryDirectory(prefix="textbatch-hashing-") as tmp:
        big = Path(tmp) / "lines.txt"
        size = write_lines(big, lines, int(args.gigabytes * 1e9))
        print(f"hashing {size / MB:,.0f} MB of text lines")
        hashing = {
            "xxh3_128": cold_and_warm(file_digest, big, args.repeats),
            "blake2b": cold_and_warm(blake2b_digest, big, args.repeats),
        }
        chunks = {
            f"{mib}MiB": best_time(lambda m=mib: file_digest(big, m << 20), args.repeats)
            for mib in (1, 4, 8)
        }
        big.unlink()

        sample = Path(tmp) / "sample.txt"
        texts = first_megabytes(lines, args.sample_megabytes)
        sample_size = write_lines(sample, texts, 1)
        records = [{"text": t} for t in texts]
        print(f"tokenising {sample_size / MB:,.0f} MB ({len(texts):,} lines)")
        encode_s = best_time(lambda: tokenizer.backend_tokenizer.encode_batch(texts), 1)
        from_records_s = best_time(lambda: TextDataset.from_records(records, tokenizer), 1)
        cache = Path(tmp) / "cache"
        build_s = best_time(lambda: TextDataset.from_file(sample, tokenizer, cache_dir=cache), 1)
        reload_s = best_time(lambda: TextDataset.from_file(sample, tokenizer, cache_dir=cache), 3)
        assert TextDataset.from_file(sample, tokenizer, cache_dir=cache).from_cache
        cache_bytes = sum(p.stat().st_size for p in cache.rglob("*.arrow"))
        verify_s = best_time(lambda: [file_digest(p) for p in cache.rglob("*.arrow")], 3)

    scale = size / sample_size
    tokenise = {
        "encode_batch_MB_per_s": sample_size / MB / encode_s,
        "from_records_MB_per_s": sample_size / MB / from_records_s,
        "from_records_s_scaled_to_file": from_records_s * scale,
        "from_file_build_s": build_s,
        "from_file_cached_reload_s": reload_s,
        "cache_files_MB": cache_bytes / MB,
        "cache_files_hash_s": verify_s,
    }
    warm = hashing["xxh3_128"]["warm_s"]
    ratios = {
        "from_records_over_xxh3_warm": tokenise["from_records_s_scaled_to_file"] / warm,
        "from_records_over_xxh3_cold": tokenise["from_records_s_scaled_to_file"]
        / hashing["xxh3_128"]["cold_s"],
        "blake2b_over_xxh3_warm": hashing["blake2b"]["warm_s"] / warm,
    }
    for name, times in hashing.items():
        print(
            f"  {name:9s} cold {times['cold_s']:6.2f} s ({size / MB / times['cold_s']:7,.0f} MB/s)"
            f"   warm {times['warm_s']:6.2f} s ({size / MB / times['warm_s']:7,.0f} MB/s)"
        )
    print("  xxh3 warm by chunk size: " + ", ".join(f"{k} {v:.2f} s" for k, v in chunks.items()))
    print(
        f"  tokenising: encode_batch {tokenise['encode_batch_MB_per_s']:.1f} MB/s, "
        f"from_records {tokenise['from_records_MB_per_s']:.1f} MB/s "
        f"-> {tokenise['from_records_s_scaled_to_file']:,.0f} s for the whole file, "
        f"{ratios['from_records_over_xxh3_warm']:,.0f}x the warm XXH3 hash "
        f"({ratios['from_records_over_xxh3_cold']:,.0f}x the cold one)"
    )
    print(
        f"  from_file on the sample: build {build_s:.2f} s, cached reload {reload_s:.3f} s, "
        f"of which hashing its {cache_bytes / MB:.0f} MB of cache files {verify_s:.3f} s"
    )
    save(
        "hashing",
        {
            "file_bytes": size,
            "sample_bytes": sample_size,
            "chunk_size_bytes": CHUNK_SIZE,
            "hashing_s": hashing,
            "xxh3_warm_s_by_chunk": chunks,
            "tokenising": tokenise,
            "ratios": ratios,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
