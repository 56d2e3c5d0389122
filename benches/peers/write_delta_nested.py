"""Writes Delta tables with nested columns with Python `deltalake` for
lakehouse-storage to read back.

Usage: write_delta_nested.py <dir>
Creates `nested` (struct, list, map, list of struct, struct of list, nulls at each
level; appends, a delete that rewrites files, a checkpoint) and `evolved` (a struct
that gains a field by schema merge) under <dir>, and prints one JSON object: for each
table, its rows as `deltalake` reads them (canonical JSON, sorted by `id`).
"""
import json
import os
import sys

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from norm_nested import normalize  # noqa: E402

root = sys.argv[1]

S = pa.struct([("a", pa.int32()), ("b", pa.string()),
               ("inner", pa.struct([("x", pa.float64())]))])
LS = pa.struct([("x", pa.int64()), ("y", pa.string())])
SCHEMA = pa.schema([
    pa.field("id", pa.int64(), nullable=False),
    ("s", S),
    ("l", pa.list_(pa.int64())),
    ("m", pa.map_(pa.string(), pa.int64())),
    ("ls", pa.list_(LS)),
    ("sl", pa.struct([("tags", pa.list_(pa.string()))])),
])


def row(i):
    s = [None,
         {"a": None, "b": f"w{i}", "inner": {"x": i + 0.75}},
         {"a": i, "b": None, "inner": None},
         {"a": i, "b": "é", "inner": {"x": None}}][i % 4]
    l = [None, [], [None], [i, None, i * 2]][(i // 2) % 4]
    m = [None, [], [("a", i), ("b", None)]][i % 3]
    ls = [[{"x": i, "y": None}, None], None, [], [{"x": None, "y": "q"}]][i % 4]
    sl = [{"tags": None}, None, {"tags": ["p", None, ""]}][i % 3]
    return {"id": i, "s": s, "l": l, "m": m, "ls": ls, "sl": sl}


def batch(first, n):
    return pa.Table.from_pylist([row(i) for i in range(first, first + n)], schema=SCHEMA)


def describe(path):
    dt = DeltaTable(path)
    return normalize(dt.to_pyarrow_table().to_pylist(), dt.schema().to_json())


out = {}

p = os.path.join(root, "nested")
write_deltalake(p, batch(0, 20))
write_deltalake(p, batch(20, 20), mode="append")
dt = DeltaTable(p)
dt.delete("id % 5 = 0")
dt.create_checkpoint()
write_deltalake(p, batch(40, 8), mode="append")
out["nested"] = describe(p)

# A struct field added by a later append: NULL in the older file.
p = os.path.join(root, "evolved")
old = pa.schema([pa.field("id", pa.int64(), nullable=False),
                 ("s", pa.struct([("a", pa.int32())]))])
write_deltalake(p, pa.Table.from_pylist(
    [{"id": i, "s": None if i == 1 else {"a": i}} for i in range(4)], schema=old))
new = pa.schema([pa.field("id", pa.int64(), nullable=False),
                 ("s", pa.struct([("a", pa.int32()), ("c", pa.string())]))])
write_deltalake(p, pa.Table.from_pylist(
    [{"id": i, "s": {"a": None, "c": f"c{i}"}} for i in range(4, 7)], schema=new),
    mode="append", schema_mode="merge")
out["evolved"] = describe(p)

print(json.dumps(out))
sys.stdout.flush()
# deltalake's runtime may abort at interpreter exit: the output is complete here.
os._exit(0)
