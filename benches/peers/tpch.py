#!/usr/bin/env python3
"""TPC-H with DuckDB as the reference: generates the data, writes DuckDB's answers, times DuckDB.

Usage (from the repository root, after `bash benches/peers/setup.sh`):

    benches/peers/.venv/bin/python benches/peers/tpch.py --sf 0.01 --dir /tmp/tpch-sf0.01 [--time N]

* Generates the eight TPC-H tables as Parquet with tpchgen-cli into DIR (skipped when
  DIR/lineitem.parquet exists).
* Runs the 22 queries of examples/tpch/ on DuckDB over those files and writes
  each answer to DIR/answers/qNN.csv (no header, DuckDB's CSV quoting).
* With --time N, also runs each query N times on --threads threads and prints one line per
  query, `PEER duckdb_qNN <best seconds>`, and `PEER duckdb_total <sum of bests>`.
"""

import argparse
import os
import pathlib
import subprocess
import sys
import time

import duckdb

TABLES = ["customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier"]
ROOT = pathlib.Path(__file__).resolve().parents[2]
QUERIES = ROOT / "examples" / "tpch"


def generate(sf: str, out: pathlib.Path) -> None:
    if (out / "lineitem.parquet").exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    cli = pathlib.Path(sys.executable).parent / "tpchgen-cli"
    subprocess.run([str(cli), "parquet", "-s", sf, "-o", str(out)], check=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sf", default="0.01")
    ap.add_argument("--dir", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--time", type=int, default=0, help="timed runs per query")
    args = ap.parse_args()
    data = pathlib.Path(args.dir)
    generate(args.sf, data)
    con = duckdb.connect()
    con.execute(f"SET threads = {args.threads}")
    for t in TABLES:
        path = str(data / f"{t}.parquet").replace("'", "''")
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{path}')")
    answers = data / "answers"
    answers.mkdir(exist_ok=True)
    total = 0.0
    for n in range(1, 23):
        sql = (QUERIES / f"q{n:02}.sql").read_text().strip().rstrip(";")
        target = str(answers / f"q{n:02}.csv").replace("'", "''")
        con.execute(f"COPY ({sql}) TO '{target}' (HEADER false)")
        if args.time > 0:
            best = float("inf")
            for _ in range(args.time):
                start = time.perf_counter()
                con.execute(sql).fetchall()
                best = min(best, time.perf_counter() - start)
            total += best
            print(f"PEER duckdb_q{n:02} {best:.6f}", flush=True)
    if args.time > 0:
        print(f"PEER duckdb_total {total:.6f}", flush=True)
    print(f"# answers in {answers}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
