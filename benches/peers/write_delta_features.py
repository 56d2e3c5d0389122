"""Writes Delta tables with Python `deltalake`, one per feature it can write, for
lakehouse-storage to read back and compare value by value.

Usage: write_delta_features.py <dir>
Creates one table per feature under <dir> and prints one JSON object: for each table,
its version and every row `deltalake` reads back, sorted by `id`, each value in a
canonical form (see `canonical`).
"""
import datetime
import decimal
import json
import os
import struct
import sys

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, QueryBuilder, write_deltalake

root = sys.argv[1]


def canonical(column, data_type):
    """The values of a column in a form both sides print the same way: integers and
    booleans as themselves, floats as the hex of their 64-bit pattern ("nan" for NaN),
    decimals as the unscaled integer in text, dates as days and timestamps as
    microseconds since the epoch, binary as hex, null as null."""
    if pa.types.is_dictionary(data_type):
        column = column.dictionary_decode()
        data_type = data_type.value_type
    if pa.types.is_timestamp(data_type):
        unit = {"s": 1_000_000, "ms": 1000, "us": 1, "ns": 0.001}[data_type.unit]
        return [None if v is None else int(v * unit)
                for v in pc.cast(column, pa.int64()).to_pylist()]
    if pa.types.is_date32(data_type):
        return pc.cast(column, pa.int32()).to_pylist()
    values = column.to_pylist()
    if pa.types.is_floating(data_type):
        return [None if v is None else "nan" if v != v else struct.pack(">d", v).hex()
                for v in values]
    if pa.types.is_decimal(data_type):
        return [None if v is None else str(int(v.scaleb(data_type.scale))) for v in values]
    if pa.types.is_map(data_type):
        # Maps as lists of [key, value] pairs (JSON has no tuples); nested values of
        # integers and strings print as themselves.
        return [None if v is None else [list(kv) for kv in v] for v in values]
    if pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type) \
            or pa.types.is_binary_view(data_type):
        return [None if v is None else v.hex() for v in values]
    return values


def describe(path):
    """What deltalake's own (DataFusion) reader reads: its pyarrow dataset reads the
    data columns of a column-mapped table as nulls."""
    dt = DeltaTable(path)
    t = pa.table(QueryBuilder().register("t", dt).execute(
        "select * from t order by id").read_all())
    columns = {name: canonical(t.column(name).combine_chunks(), t.schema.field(name).type)
               for name in t.column_names}
    rows = [{name: columns[name][i] for name in t.column_names} for i in range(t.num_rows)]
    return {"version": dt.version(), "rows": rows}


def batch(first, n):
    ids = list(range(first, first + n))
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "value": pa.array([i * 0.25 for i in ids], pa.float64()),
        "label": pa.array([None if i % 7 == 0 else f"l/{i % 5}=x %" for i in ids],
                          pa.string()),
        "ts": pa.array([datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
                        + datetime.timedelta(seconds=i, microseconds=i) for i in ids],
                       pa.timestamp("us", tz="UTC")),
    })


out = {}

# Partition values of every type deltalake writes: floats with NaN, infinities and
# -0.0, binary, booleans, dates, timestamps with and without a time zone (fractional
# micros), decimals, escaped characters, empty strings and nulls.
n = 9
ids = list(range(n))
p = os.path.join(root, "partition_types")
t = pa.table({
    "id": pa.array(ids, pa.int64()),
    "v": pa.array([i * 10 for i in ids], pa.int64()),
    "p_i8": pa.array([-5, 7, None, 0, 1, 2, 3, 4, 5], pa.int8()),
    "p_i16": pa.array([300, -1, 2, None, 3, 4, 5, 6, 7], pa.int16()),
    "p_i32": pa.array([1, 2, 3, 4, None, -70000, 6, 7, 8], pa.int32()),
    "p_f64": pa.array([1.5, float("nan"), float("inf"), float("-inf"), -0.0, None, 1e20,
                       1e-7, 0.1], pa.float64()),
    "p_f32": pa.array([3.4, 1.5, None, -0.0, 2.0, 1e10, 0.5, 6.25, 7.0], pa.float32()),
    "p_bool": pa.array([True, False, None, True, False, True, False, True, False]),
    "p_date": pa.array([datetime.date(2026, 1, 1), None, datetime.date(1969, 12, 31),
                        datetime.date(2026, 2, 28), datetime.date(2000, 1, 1),
                        datetime.date(2026, 1, 1), datetime.date(2026, 1, 2),
                        datetime.date(2026, 1, 3), datetime.date(2026, 1, 4)], pa.date32()),
    "p_ts": pa.array([datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
                      datetime.datetime(2026, 1, 1, 12, 30, 5, 123456,
                                        tzinfo=datetime.timezone.utc),
                      None,
                      datetime.datetime(1969, 12, 31, 23, 59, 59, 1,
                                        tzinfo=datetime.timezone.utc)] * 2
                     + [None], pa.timestamp("us", tz="UTC")),
    "p_ntz": pa.array([datetime.datetime(2026, 1, 1, 0, 0, 0, 500),
                       None,
                       datetime.datetime(2026, 6, 30, 23, 59, 59, 999999)] * 3,
                      pa.timestamp("us")),
    # (deltalake misspells negative decimal partition values with a fraction)
    "p_dec": pa.array([decimal.Decimal(x) for x in
                       ["1.23", "100", "7.5", "0", "0.01", "12345678.90", "-3", "2", "5"]]
                      [:8] + [None], pa.decimal128(10, 2)),
    "p_bin": pa.array([b"\x00\x01", b"abc", b"\xff\xfe", b"", None, b"a/b", b"=", b"%",
                       b"\x7f"], pa.binary()),
    "p_str": pa.array(["", "a b", "x/y=z%", "\u00e9\u65e5", None, "#?:*", "..", "a\\b",
                       "__HIVE_DEFAULT_PARTITION__"]),
})
partition_columns = [c for c in t.column_names if c.startswith("p_")]
write_deltalake(p, t, partition_by=partition_columns)
out["partition_types"] = describe(p)
# deltalake writes a binary partition value as `\uXXXX` text per byte and reads that
# text back as the value; the bytes written are these.
out["partition_types"]["written_p_bin"] = canonical(t.column("p_bin").combine_chunks(),
                                                    pa.binary())

# Column mapping (name mode), with a partition column, an append and a delete
# (deltalake neither renames, drops nor adds columns of a column-mapped table).
p = os.path.join(root, "column_mapping")
write_deltalake(p, batch(0, 20), partition_by=["label"],
                configuration={"delta.columnMapping.mode": "name"})
write_deltalake(p, batch(20, 10), mode="append", partition_by=["label"])
DeltaTable(p).delete("id % 6 = 1")
out["column_mapping"] = describe(p)

# Column mapping with nested columns: the struct fields inside structs, lists and
# maps get physical names of their own, which the data files use.
def nested_batch(first, n):
    ids = list(range(first, first + n))
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "s": pa.array([None if i % 5 == 0 else {"a": i, "b": None if i % 3 == 0 else f"b{i}"}
                       for i in ids], pa.struct([("a", pa.int64()), ("b", pa.string())])),
        "l": pa.array([[{"x": i + k} for k in range(i % 3)] for i in ids],
                      pa.list_(pa.struct([("x", pa.int64())]))),
        "m": pa.array([None if i % 4 == 0 else [(f"k{i}", {"y": i * 10})] for i in ids],
                      pa.map_(pa.string(), pa.struct([("y", pa.int64())]))),
    })


p = os.path.join(root, "column_mapping_nested")
write_deltalake(p, nested_batch(0, 12), configuration={"delta.columnMapping.mode": "name"})
write_deltalake(p, nested_batch(12, 6), mode="append")
out["column_mapping_nested"] = describe(p)

# Change data feed: deletes and updates write `_change_data` files.
p = os.path.join(root, "change_data_feed")
write_deltalake(p, batch(0, 30), configuration={"delta.enableChangeDataFeed": "true"})
write_deltalake(p, batch(30, 10), mode="append")
dt = DeltaTable(p)
dt.delete("id % 4 = 0")
dt.update(updates={"value": "value + 1000"}, predicate="id < 10")
out["change_data_feed"] = describe(p)
out["change_data_feed"]["cdc_files"] = sum(
    len(files) for _, _, files in os.walk(os.path.join(p, "_change_data")))

# timestamp_ntz columns (the reader and writer feature timestampNtz).
p = os.path.join(root, "timestamp_ntz")
t = batch(0, 12)
t = t.append_column("ntz", pa.array([datetime.datetime(2026, 1, 1, 1, 2, 3, i)
                                     if i % 5 else None for i in range(12)],
                                    pa.timestamp("us")))
write_deltalake(p, t)
out["timestamp_ntz"] = describe(p)

# Checkpoints, copy-on-write deletes and updates, then more commits.
p = os.path.join(root, "checkpoint_deletes_updates")
for i in range(4):
    write_deltalake(p, batch(i * 25, 25), mode="append")
dt = DeltaTable(p)
dt.delete("id % 3 = 0")
dt.create_checkpoint()
dt = DeltaTable(p)
dt.update(updates={"label": "'updated'"}, predicate="id > 90")
write_deltalake(p, batch(100, 10), mode="append")
out["checkpoint_deletes_updates"] = describe(p)

# Schema evolution by merge: a column added by a later append is NULL in older files;
# an overwrite with a new partitioning.
p = os.path.join(root, "schema_merge")
write_deltalake(p, batch(0, 20).drop_columns(["label"]))
more = batch(20, 20).append_column("price", pa.array(
    [decimal.Decimal(i) / 100 for i in range(20)], pa.decimal128(10, 2)))
write_deltalake(p, more, mode="append", schema_mode="merge")
write_deltalake(p, batch(40, 5).drop_columns(["label"]), mode="append", schema_mode="merge")
out["schema_merge"] = describe(p)

print(json.dumps(out))
sys.stdout.flush()
# deltalake's runtime may abort at interpreter exit: the output is complete here.
os._exit(0)
