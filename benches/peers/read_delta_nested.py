"""Reads a Delta table with nested columns with independent engines.

Usage: read_delta_nested.py <table dir>
Prints one JSON object: the rows (canonical JSON, sorted by `id`) as `deltalake`,
Polars and DuckDB (over the files `deltalake` lists) read them.
"""
import json
import os
import sys

import deltalake
import duckdb
import polars as pl

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from norm_nested import normalize  # noqa: E402

path = sys.argv[1]
dt = deltalake.DeltaTable(path)
schema = dt.schema().to_json()
out = {"deltalake": normalize(dt.to_pyarrow_table().to_pylist(), schema)}
out["polars"] = normalize(pl.read_delta(path).to_dicts(), schema)
files = dt.file_uris()
con = duckdb.connect()
cur = con.execute("select * from read_parquet(?)", [files])
names = [d[0] for d in cur.description]
out["duckdb"] = normalize([dict(zip(names, r)) for r in cur.fetchall()], schema)
print(json.dumps(out))
sys.stdout.flush()
# deltalake's runtime may abort at interpreter exit: the output is complete here.
os._exit(0)
