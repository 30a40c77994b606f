#!/usr/bin/env python3
"""What a node's commits write: the pages in its store's WAL, by table or index.

Copy a node's `node.sqlite3` and `node.sqlite3-wal` while it runs (e.g. during the
bench's closed loop, with --keep and --work-dir), then:

    tests/bench/wal-pages.py COPY/node.sqlite3

It reads the frames of the WAL's current generation (those whose salt is the
header's), maps each frame's page to the b-tree that owns it with SQLite's dbstat
table (Python's sqlite3 has it), and prints frames per table or index, and per
filing: the filings the WAL added (filings with the WAL against without it).
README, Benchmark, item 27 says what it showed.
"""
import collections
import os
import shutil
import sqlite3
import struct
import sys
import tempfile


def main(db: str) -> None:
    with open(db + "-wal", "rb") as f:
        data = f.read()
    _, _, page_size, _, salt1, salt2, _, _ = struct.unpack(">8I", data[:32])
    frames, commits, offset = [], 0, 32
    while offset + 24 + page_size <= len(data):
        page, commit_size, s1, s2 = struct.unpack(">4I", data[offset:offset + 16])
        if (s1, s2) != (salt1, salt2):
            break
        frames.append(page)
        commits += commit_size != 0
        offset += 24 + page_size
    with_wal = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    owner = dict(with_wal.execute("SELECT pageno, name FROM dbstat"))
    counts = collections.Counter(owner.get(p, "(new page)") for p in frames)
    with tempfile.TemporaryDirectory() as scratch:
        alone = os.path.join(scratch, "db")
        shutil.copy(db, alone)
        before = sqlite3.connect(alone).execute("SELECT COUNT(*) FROM filings").fetchone()[0]
    after = with_wal.execute("SELECT COUNT(*) FROM filings").fetchone()[0]
    filings = max(after - before, 1)
    print(f"{db}: {len(frames)} frames of {page_size} bytes in {commits} commits; "
          f"{after - before} filings added: {len(frames) / filings:.1f} frames "
          f"and {commits / filings:.2f} commits per filing")
    for name, n in counts.most_common(25):
        print(f"  {n / filings:6.2f} per filing  {100 * n / len(frames):5.1f}%  {name}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
