"""Runs sequences of SQL writes in DuckDB, and reads Delta tables with delta-rs: the
peer side of `examples/tests/dml_duckdb.rs`.

Usage: dml_sequences.py <cases.json>

The file holds {"cases": [{"setup": [sql, ...], "statements": [sql, ...], "delta":
dir or null}, ...]}. Each case runs in a fresh in-memory DuckDB database: `setup`, then
the statements in order (each one's affected-row count is recorded), then the table `t` is
read back. When `delta` names a Delta table, delta-rs reads it too, through its
DataFusion engine (`QueryBuilder`), which applies deletion vectors.

Prints one JSON object: {"cases": [{"counts": [...], "rows": [[id, region, qty,
price], ...], "delta_rows": [...] or null, "error": null or text}, ...]}, the rows in
no particular order.
"""
import json
import os
import sys

import duckdb
import pyarrow as pa
from deltalake import DeltaTable, QueryBuilder

COLUMNS = "id, region, qty, price"


def run_case(case):
    out = {"counts": [], "rows": [], "delta_rows": None, "error": None}
    con = duckdb.connect()
    try:
        for sql in case["setup"]:
            con.execute(sql)
        for sql in case["statements"]:
            result = con.execute(sql).fetchall()
            out["counts"].append(result[0][0] if result else None)
        out["rows"] = [list(r) for r in con.execute(f"SELECT {COLUMNS} FROM t").fetchall()]
    except duckdb.Error as e:
        out["error"] = f"duckdb: {e}"
        return out
    finally:
        con.close()
    if case.get("delta"):
        try:
            dt = DeltaTable(case["delta"])
            table = pa.table(
                QueryBuilder().register("t", dt).execute(f"SELECT {COLUMNS} FROM t").read_all()
            )
            out["delta_rows"] = [[r[c] for c in ("id", "region", "qty", "price")] for r in table.to_pylist()]
        except Exception as e:  # noqa: BLE001 - reported to the test, which fails
            out["error"] = f"delta-rs: {e}"
    return out


with open(sys.argv[1]) as f:
    cases = json.load(f)["cases"]
print(json.dumps({"cases": [run_case(c) for c in cases]}))
sys.stdout.flush()
# deltalake's runtime may abort at interpreter exit: the output is complete here.
os._exit(0)
