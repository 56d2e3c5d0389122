"""Peers for `lakehouse-bench storage`: write the same rows, partitioned by category and
region with zstd, with DuckDB, pyarrow and delta-rs. Prints `PEER <name> <seconds>`.

Usage: storage_peers.py <events.arrow> <output dir>
"""
import os
import shutil
import sys
import time

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from deltalake import WriterProperties, write_deltalake

src, out = sys.argv[1], sys.argv[2]
with pa.memory_map(src) as f:
    table = pa.ipc.open_file(f).read_all()
parts = ["category", "region"]


def fresh(name):
    path = os.path.join(out, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(out, exist_ok=True)
    return path


con = duckdb.connect()
con.execute("SET threads TO 2")
con.register("events", table)
path = fresh("duckdb")
start = time.perf_counter()
con.execute(
    f"COPY events TO '{path}' (FORMAT parquet, PARTITION_BY (category, region), COMPRESSION zstd)"
)
print("PEER duckdb_ingest_s", time.perf_counter() - start)

path = fresh("pyarrow")
start = time.perf_counter()
ds.write_dataset(
    table,
    path,
    format="parquet",
    partitioning=parts,
    partitioning_flavor="hive",
    file_options=ds.ParquetFileFormat().make_write_options(compression="zstd"),
    existing_data_behavior="overwrite_or_ignore",
)
print("PEER pyarrow_ingest_s", time.perf_counter() - start)

path = fresh("deltars")
start = time.perf_counter()
write_deltalake(
    path,
    table,
    partition_by=parts,
    writer_properties=WriterProperties(compression="ZSTD"),
)
print("PEER deltars_ingest_s", time.perf_counter() - start)
_ = pq
sys.stdout.flush()
# deltalake's runtime may abort at interpreter exit: the output is complete here.
os._exit(0)
