#!/usr/bin/env python3
"""DuckDB's DELETE and MERGE on the table `lakehouse-bench query` mutates (query_dml.rs).

Usage: dml_duckdb.py --rows N --threads T --dir DIR

Builds the same rows as the bench (id i, customer (i * 7919) % 100000, region
['eu','us','apac','latam'][i % 4], price (i % 1000) + 0.5) in a DuckDB database file
under DIR, then times, each once on a fresh copy of the table:

* `DELETE FROM t WHERE customer < 1000` (1 % of the rows, spread over the whole table);
* a MERGE of 100,000 source rows: 50,000 existing ids spread over the table get a new
  price, 50,000 new ids are inserted.

Prints `PEER duckdb_delete_s <seconds>`, `PEER duckdb_merge_s <seconds>` and the row
counts it saw (`PEER duckdb_deleted`, `PEER duckdb_merged`, `PEER duckdb_rows_after`).
"""

import argparse
import pathlib
import time

import duckdb


def build(con: duckdb.DuckDBPyConnection, rows: int) -> None:
    con.execute("DROP TABLE IF EXISTS t")
    con.execute(
        f"""CREATE TABLE t AS SELECT
              i::BIGINT AS id,
              ((i * 7919) % 100000)::BIGINT AS customer,
              (['eu', 'us', 'apac', 'latam'])[(i % 4) + 1]::VARCHAR AS region,
              ((i % 1000) + 0.5)::DOUBLE AS price
            FROM range({rows}) r(i)"""
    )
    con.execute("CHECKPOINT")


def source(con: duckdb.DuckDBPyConnection, rows: int) -> None:
    step = rows // 50000
    con.execute("DROP TABLE IF EXISTS src")
    con.execute(
        f"""CREATE TABLE src AS
            SELECT (j * {step})::BIGINT AS id, ((j * {step} * 7919) % 100000)::BIGINT AS customer,
                   (['eu', 'us', 'apac', 'latam'])[((j * {step}) % 4) + 1]::VARCHAR AS region,
                   1.25::DOUBLE AS price
            FROM range(50000) r(j)
            UNION ALL
            SELECT ({rows} + j)::BIGINT, ((({rows} + j) * 7919) % 100000)::BIGINT,
                   (['eu', 'us', 'apac', 'latam'])[(({rows} + j) % 4) + 1]::VARCHAR, 2.5::DOUBLE
            FROM range(50000) r(j)"""
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dir", required=True)
    a = ap.parse_args()
    path = pathlib.Path(a.dir) / "dml.duckdb"
    path.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    con.execute(f"SET threads = {a.threads}")

    build(con, a.rows)
    start = time.perf_counter()
    deleted = con.execute("DELETE FROM t WHERE customer < 1000").fetchone()[0]
    delete_s = time.perf_counter() - start

    build(con, a.rows)
    source(con, a.rows)
    con.execute("CHECKPOINT")
    start = time.perf_counter()
    merged = con.execute(
        """MERGE INTO t USING src s ON t.id = s.id
           WHEN MATCHED THEN UPDATE SET price = s.price
           WHEN NOT MATCHED THEN INSERT (id, customer, region, price)
                VALUES (s.id, s.customer, s.region, s.price)"""
    ).fetchone()[0]
    merge_s = time.perf_counter() - start
    after = con.execute("SELECT count(*) FROM t").fetchone()[0]
    con.close()
    path.unlink(missing_ok=True)
    print(f"PEER duckdb_delete_s {delete_s}")
    print(f"PEER duckdb_merge_s {merge_s}")
    print(f"PEER duckdb_deleted {deleted}")
    print(f"PEER duckdb_merged {merged}")
    print(f"PEER duckdb_rows_after {after}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
