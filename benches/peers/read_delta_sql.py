"""Reads a Delta table through delta-rs's DataFusion engine (`QueryBuilder`), which
applies deletion vectors (deltalake's pyarrow path refuses tables that have them).

Usage: read_delta_sql.py <table dir> <numeric column>
Prints one JSON object: the version, the rows and the column's sum.
"""
import json
import os
import sys

import pyarrow as pa
from deltalake import DeltaTable, QueryBuilder

path, column = sys.argv[1], sys.argv[2]
dt = DeltaTable(path)
result = pa.table(
    QueryBuilder()
    .register("t", dt)
    .execute(f'select count(*) as n, sum("{column}") as s from t')
    .read_all()
)
row = result.to_pylist()[0]
out = {
    "version": dt.version(),
    "deltars_rows": row["n"],
    "deltars_sum": float(row["s"] or 0.0),
}
print(json.dumps(out))
sys.stdout.flush()
# deltalake's runtime may abort at interpreter exit: the output is complete here.
os._exit(0)
