"""Writes Delta tables with Python `deltalake` for lakehouse-storage to read back.

Usage: write_delta.py <dir>
Creates one table per feature under <dir> and prints one JSON object: for each table,
what `deltalake` reads back (rows, sorted ids, the sum of `value`, sorted labels).
"""
import datetime
import decimal
import json
import os
import sys

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

root = sys.argv[1]


def batch(first, n):
    ids = list(range(first, first + n))
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "value": pa.array([i * 0.5 for i in ids], pa.float64()),
        "label": pa.array([None if i % 7 == 0 else f"l/{i % 5}=x %" for i in ids], pa.string()),
        "day": pa.array([datetime.date(2026, 1, 1 + i % 3) for i in ids], pa.date32()),
        "ts": pa.array([datetime.datetime(2026, 1, 1) + datetime.timedelta(seconds=i) for i in ids],
                       pa.timestamp("us")),
        "price": pa.array([decimal.Decimal(i) / 100 for i in ids], pa.decimal128(10, 2)),
        "small": pa.array([i % 3 for i in ids], pa.int32()),
    })


def describe(path):
    t = DeltaTable(path).to_pyarrow_table()
    labels = sorted(v for v in t.column("label").to_pylist() if v is not None) \
        if "label" in t.column_names else []
    return {
        "rows": t.num_rows,
        "ids": sorted(t.column("id").to_pylist()),
        "value": sum(v for v in t.column("value").to_pylist() if v is not None),
        "labels": labels,
    }


out = {}

# Partition values of several types, escaped characters and nulls.
p = os.path.join(root, "partitions")
write_deltalake(p, batch(0, 60), partition_by=["label", "day", "small"])
write_deltalake(p, batch(60, 40), partition_by=["label", "day", "small"], mode="append")
out["partitions"] = describe(p)

# Deletes (files rewritten), a checkpoint, then more commits.
p = os.path.join(root, "deletes_checkpoint")
for i in range(4):
    write_deltalake(p, batch(i * 25, 25), mode="append")
dt = DeltaTable(p)
dt.delete("id % 4 = 0")
dt.create_checkpoint()
write_deltalake(p, batch(100, 10), mode="append")
out["deletes_checkpoint"] = describe(p)

# Schema evolution: a column added by a later append is NULL in older files.
p = os.path.join(root, "evolution")
write_deltalake(p, batch(0, 20).drop_columns(["price"]))
write_deltalake(p, batch(20, 20), mode="append", schema_mode="merge")
out["evolution"] = describe(p)

print(json.dumps(out))
sys.stdout.flush()
# deltalake's runtime may abort at interpreter exit: the output is complete here.
os._exit(0)
