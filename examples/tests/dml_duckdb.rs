//! SQL writes against DuckDB on the same data: a property test of random sequences of
//! `INSERT`, `DELETE`, `UPDATE` and `MERGE` on a small Delta table (copy-on-write or
//! with deletion vectors, partitioned by `region` or not), run through `QueryEngine`,
//! and of the same statements in DuckDB. Each statement's row count and the end states
//! must be equal, and delta-rs must read our table as DuckDB's end state.
//!
//! The cases are generated up front and checked in one batch: one Python process
//! (`benches/peers/dml_sequences.py`) runs DuckDB and delta-rs for all of them. A failing
//! case is then shrunk by proptest's value tree, one Python run per step, and reported
//! with the seed (`PROPTEST_RNG_SEED=<seed>` runs the same cases again).
//!
//! Needs `LAKEHOUSE_PEERS_PYTHON`, a Python with `duckdb` and `deltalake`
//! (`bash benches/peers/setup.sh`; `.ci/run` always sets it, so a broken venv fails
//! there). Without it the test is skipped, except under a `CI` environment variable,
//! where it fails.
//!
//! What is not generated, because the engines legitimately differ:
//! * `/` on integers: DataFusion divides integers, DuckDB returns a double.
//! * Doubles assigned to integer columns (`SET qty = price`): DuckDB rounds, Arrow's
//!   cast truncates.
//! * In the `WHERE` of `DELETE` / `UPDATE`, what our engine refuses (`Unsupported`,
//!   before writing anything) because the condition goes to the table as a core
//!   predicate: arithmetic on columns (`qty + 1 > 3`, documented), an integer column
//!   compared with a fractional literal (`qty > 2.5`: the literal does not convert to
//!   the column's type without loss, see `pushdown.rs`), and `NULL` in an `IN` list
//!   (the core predicate has no null literal). Those would only test the refusal; they
//!   are generated in `MERGE` conditions and in the `WHERE` of `INSERT ... SELECT`,
//!   which DataFusion evaluates (there `IN` lists, with and without `NULL`, check the
//!   engine's null-safe combination of lists, see `lakehouse-query`'s `null_safe`).
//! * Duplicate keys in a `MERGE` source (both refuse a target row matched twice) and
//!   an unconditional `WHEN MATCHED` before another one (DuckDB refuses the statement
//!   as unreachable; ours tries the clauses in order).
//! * Values that overflow or lose precision: prices are halves and stay small, so
//!   every sum and product of them is exact.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, UInt64Type};
use lakehouse_query::{QueryEngine, QueryOptions};
use lakehouse_storage::{Location, PartitionField, Table, TableOptions};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use serde_json::{Value, json};

/// Cases per run: one Python process checks them all.
const CASES: usize = 32;
/// Python runs the shrinking of a failing case may take.
const SHRINK_STEPS: usize = 150;

const CREATE: &str =
    "CREATE TABLE t (id BIGINT NOT NULL, region VARCHAR, qty BIGINT, price DOUBLE)";

/// One row: id, region, qty, price.
type Row = (i64, Option<String>, Option<i64>, Option<f64>);

/// A generated row: price in halves.
#[derive(Clone, Debug)]
struct Seed {
    id: i64,
    region: Option<&'static str>,
    qty: Option<i64>,
    price_halves: Option<i64>,
}

#[derive(Clone, Debug)]
struct Case {
    partitioned: bool,
    deletion_vectors: bool,
    rows: Vec<Seed>,
    statements: Vec<String>,
}

fn half(h: i64) -> String {
    format!("{:.1}", h as f64 / 2.0)
}

fn or_null<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "NULL".to_owned(), |v| v.to_string())
}

impl Seed {
    /// The row as a `VALUES` tuple; `typed_nulls` writes `CAST(NULL AS type)`, so that a
    /// column of a `MERGE` source that is null in every row still has its type.
    fn values(&self, typed_nulls: bool) -> String {
        let null = |t: &str| {
            if typed_nulls {
                format!("CAST(NULL AS {t})")
            } else {
                "NULL".to_owned()
            }
        };
        format!(
            "({}, {}, {}, {})",
            self.id,
            self.region
                .map_or_else(|| null("VARCHAR"), |r| format!("'{r}'")),
            self.qty.map_or_else(|| null("BIGINT"), |q| q.to_string()),
            self.price_halves.map_or_else(|| null("DOUBLE"), half),
        )
    }
}

fn values_list(rows: &[Seed], typed_nulls: bool) -> String {
    rows.iter()
        .map(|r| r.values(typed_nulls))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---- strategies -------------------------------------------------------------------

fn region() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        4 => prop::sample::select(vec!["eu", "us", "apac"]).prop_map(Some),
        1 => Just(None),
    ]
}

/// Region, qty and price of a row with the given id.
fn seed_rest() -> impl Strategy<Value = (Option<&'static str>, Option<i64>, Option<i64>)> {
    (
        region(),
        prop::option::weighted(0.8, -5..20i64),
        prop::option::weighted(0.9, 0..40i64),
    )
}

/// Rows with distinct ids from `ids`, `n` of them.
fn seeds(ids: std::ops::Range<i64>, n: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Seed>> {
    prop::collection::btree_set(ids, n).prop_flat_map(|ids: BTreeSet<i64>| {
        let n = ids.len();
        prop::collection::vec(seed_rest(), n).prop_map(move |rest| {
            ids.iter()
                .zip(rest)
                .map(|(&id, (region, qty, price_halves))| Seed {
                    id,
                    region,
                    qty,
                    price_halves,
                })
                .collect()
        })
    })
}

fn cmp() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["=", "<>", "<", "<=", ">", ">="])
}

fn not() -> impl Strategy<Value = &'static str> {
    prop_oneof![3 => Just(""), 1 => Just("NOT ")]
}

/// Where a generated condition goes: what each place takes (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Place {
    /// The `WHERE` of `DELETE` and `UPDATE`: what translates to a core predicate.
    Dml,
    /// The `WHERE` of the `SELECT` of an `INSERT`, which DataFusion plans and
    /// optimizes.
    Select,
    /// `MERGE` conditions: DataFusion expressions over the pairs of rows.
    Merge,
}

/// A condition on the table's columns, qualified by `q` (`""` or `"t."`), for
/// `place`: comparisons with literals, `BETWEEN`, `IN`, `IS NULL`.
fn leaf(q: &'static str, place: Place) -> BoxedStrategy<String> {
    let mut arms: Vec<(u32, BoxedStrategy<String>)> = vec![
        (
            2,
            (cmp(), 0..30i64)
                .prop_map(move |(op, v)| format!("{q}id {op} {v}"))
                .boxed(),
        ),
        (
            2,
            (cmp(), -5..20i64)
                .prop_map(move |(op, v)| format!("{q}qty {op} {v}"))
                .boxed(),
        ),
        // Constants to fold: the WHERE of DELETE and UPDATE is then simplified.
        (
            1,
            (cmp(), 0..15i64, 0..10i64)
                .prop_map(move |(op, a, b)| format!("{q}id {op} {a} + {b}"))
                .boxed(),
        ),
        (
            2,
            (cmp(), 0..40i64)
                .prop_map(move |(op, h)| format!("{q}price {op} {}", half(h)))
                .boxed(),
        ),
        // A double column against an integer literal.
        (
            1,
            (cmp(), 0..20i64)
                .prop_map(move |(op, v)| format!("{q}price {op} {v}"))
                .boxed(),
        ),
        (
            2,
            (
                cmp(),
                prop::sample::select(vec!["'eu'", "'us'", "'apac'", "'m'", "'zz'"]),
            )
                .prop_map(move |(op, v)| format!("{q}region {op} {v}"))
                .boxed(),
        ),
        (
            2,
            (not(), prop::sample::select(vec!["qty", "region", "price"]))
                .prop_map(move |(n, c)| format!("{q}{c} IS {n}NULL"))
                .boxed(),
        ),
        (
            1,
            (not(), 0..30i64, 0..10i64)
                .prop_map(move |(n, a, w)| format!("{q}id {n}BETWEEN {a} AND {}", a + w))
                .boxed(),
        ),
        (
            1,
            (not(), -5..20i64, 0..8i64)
                .prop_map(move |(n, a, w)| format!("{q}qty {n}BETWEEN {a} AND {}", a + w))
                .boxed(),
        ),
    ];
    // IN lists, also in a SELECT's WHERE: the engine combines them null-safely where
    // DataFusion 55's simplifier would fold `x NOT IN (1) OR x NOT IN (2)` to true also
    // where x is null.
    {
        let ints = |column: &'static str, values: std::ops::Range<i64>| {
            (not(), prop::collection::vec(values, 1..4))
                .prop_map(move |(n, v)| {
                    let v: Vec<String> = v.iter().map(i64::to_string).collect();
                    format!("{q}{column} {n}IN ({})", v.join(", "))
                })
                .boxed()
        };
        arms.push((1, ints("id", 0..30)));
        arms.push((1, ints("qty", -5..20)));
        arms.push((
            1,
            (
                not(),
                prop::sample::subsequence(vec!["'eu'", "'us'", "'apac'", "'zz'"], 1..3),
            )
                .prop_map(move |(n, v)| format!("{q}region {n}IN ({})", v.join(", ")))
                .boxed(),
        ));
    }
    if place != Place::Dml {
        // An integer column against a fractional literal: compared as doubles.
        arms.push((
            1,
            (cmp(), -10..40i64)
                .prop_map(move |(op, h)| format!("{q}qty {op} {}", half(h)))
                .boxed(),
        ));
    }
    if place != Place::Dml {
        // With a NULL in the list, NOT IN is never true and IN never false.
        arms.push((
            1,
            (not(), prop::collection::vec(-5..20i64, 0..3))
                .prop_map(move |(n, v)| {
                    let mut items: Vec<String> = v.iter().map(i64::to_string).collect();
                    items.push("NULL".into());
                    format!("{q}qty {n}IN ({})", items.join(", "))
                })
                .boxed(),
        ));
    }
    prop::strategy::Union::new_weighted(arms).boxed()
}

fn predicate(q: &'static str, place: Place) -> BoxedStrategy<String> {
    leaf(q, place)
        .prop_recursive(2, 6, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} AND {b})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} OR {b})")),
                inner.prop_map(|a| format!("NOT ({a})")),
            ]
        })
        .boxed()
}

fn where_clause() -> impl Strategy<Value = String> {
    prop::option::weighted(0.85, predicate("", Place::Dml)).prop_map(|p| match p {
        Some(p) => format!(" WHERE {p}"),
        None => String::new(),
    })
}

fn insert_values() -> impl Strategy<Value = String> {
    (seeds(0..40, 1..4), any::<bool>()).prop_map(|(rows, all)| {
        if all {
            format!("INSERT INTO t VALUES {}", values_list(&rows, false))
        } else {
            // By column names, in another order; region is null.
            let values: Vec<String> = rows
                .iter()
                .map(|r| {
                    format!(
                        "({}, {}, {})",
                        r.price_halves.map_or_else(|| "NULL".into(), half),
                        r.id,
                        or_null(r.qty)
                    )
                })
                .collect();
            format!(
                "INSERT INTO t (price, id, qty) VALUES {}",
                values.join(", ")
            )
        }
    })
}

fn insert_select() -> impl Strategy<Value = String> {
    predicate("", Place::Select)
        .prop_map(|p| format!("INSERT INTO t SELECT id + 100, region, qty, price FROM t WHERE {p}"))
}

fn delete() -> impl Strategy<Value = String> {
    where_clause().prop_map(|w| format!("DELETE FROM t{w}"))
}

fn qty_value() -> impl Strategy<Value = String> {
    prop_oneof![
        (1..5i64).prop_map(|k| format!("qty + {k}")),
        (1..5i64).prop_map(|k| format!("qty - {k}")),
        Just("qty * 2".to_owned()),
        Just("NULL".to_owned()),
        (-3..10i64).prop_map(|k| k.to_string()),
        Just("coalesce(qty, 0) + 1".to_owned()),
        Just("id".to_owned()),
        (0..6i64).prop_map(|k| format!("CASE WHEN qty > {k} THEN qty - {k} ELSE qty + 1 END")),
        Just("qty % 3".to_owned()),
    ]
}

fn price_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("price * 2".to_owned()),
        Just("price + 0.5".to_owned()),
        (0..6i64).prop_map(|h| format!("price - {}", half(h))),
        (0..40i64).prop_map(half),
        Just("NULL".to_owned()),
        Just("price + qty".to_owned()),
        Just("price + id".to_owned()),
    ]
}

fn update() -> impl Strategy<Value = String> {
    (
        prop::option::weighted(0.7, qty_value()),
        prop::option::weighted(0.5, price_value()),
        prop::option::weighted(
            0.2,
            prop::sample::select(vec!["'eu'", "'us'", "'apac'", "NULL"]),
        ),
        prop::bool::weighted(0.1),
        where_clause(),
    )
        .prop_map(|(qty, price, region, id, w)| {
            let mut set = Vec::new();
            if let Some(v) = qty {
                set.push(format!("qty = {v}"));
            }
            if let Some(v) = price {
                set.push(format!("price = {v}"));
            }
            if let Some(v) = region {
                set.push(format!("region = {v}"));
            }
            if id {
                set.push("id = id + 100".to_owned());
            }
            if set.is_empty() {
                set.push("qty = qty + 1".to_owned());
            }
            format!("UPDATE t SET {}{w}", set.join(", "))
        })
}

fn merge_matched() -> impl Strategy<Value = (bool, String)> {
    prop_oneof![
        Just((
            true,
            "WHEN MATCHED AND s.qty IS NULL THEN DELETE".to_owned()
        )),
        predicate("t.", Place::Merge)
            .prop_map(|p| (true, format!("WHEN MATCHED AND {p} THEN DELETE"))),
        Just((false, "WHEN MATCHED THEN DELETE".to_owned())),
        Just((
            false,
            "WHEN MATCHED THEN UPDATE SET qty = t.qty + s.qty, price = s.price".to_owned()
        )),
        predicate("t.", Place::Merge).prop_map(|p| (
            true,
            format!("WHEN MATCHED AND {p} THEN UPDATE SET price = t.price * 2")
        )),
        Just((
            true,
            "WHEN MATCHED AND s.price > t.price THEN UPDATE SET price = s.price, region = s.region"
                .to_owned()
        )),
        Just((
            false,
            "WHEN MATCHED THEN UPDATE SET qty = coalesce(s.qty, t.qty)".to_owned()
        )),
    ]
}

fn merge_insert() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.region, s.qty, s.price)",
        "WHEN NOT MATCHED AND s.qty IS NOT NULL THEN INSERT VALUES (s.id, s.region, s.qty, s.price)",
        "WHEN NOT MATCHED THEN INSERT (id, qty) VALUES (s.id, s.qty)",
        "WHEN NOT MATCHED AND s.price > 2.0 THEN INSERT (price, id, region) VALUES (s.price * 2, s.id, s.region)",
    ])
    .prop_map(str::to_owned)
}

fn merge() -> impl Strategy<Value = String> {
    (
        seeds(0..40, 1..5),
        prop::sample::select(vec![
            "t.id = s.id",
            "s.id = t.id",
            "t.id = s.id AND t.region = 'eu'",
            "t.id = s.id AND t.qty > 2",
            "t.id = s.id AND t.region = s.region",
        ]),
        prop::collection::vec(merge_matched(), 0..3),
        prop::option::weighted(0.7, merge_insert()),
    )
        .prop_map(|(source, on, matched, insert)| {
            let mut clauses = Vec::new();
            for (conditional, clause) in matched {
                clauses.push(clause);
                if !conditional {
                    // Another WHEN MATCHED would be unreachable (DuckDB refuses it).
                    break;
                }
            }
            clauses.extend(insert);
            if clauses.is_empty() {
                clauses.push(
                    "WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.region, s.qty, s.price)".into(),
                );
            }
            format!(
                "MERGE INTO t USING (VALUES {}) AS s (id, region, qty, price) ON {on} {}",
                values_list(&source, true),
                clauses.join(" ")
            )
        })
}

fn statement() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => insert_values(),
        1 => insert_select(),
        3 => delete(),
        3 => update(),
        3 => merge(),
    ]
}

fn case() -> BoxedStrategy<Case> {
    // Statements first: proptest shrinks a tuple's elements in order, and fewer
    // statements make the shortest report.
    (
        prop::collection::vec(statement(), 1..=8),
        seeds(0..30, 0..10),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(statements, rows, partitioned, deletion_vectors)| Case {
            partitioned,
            deletion_vectors,
            rows,
            statements,
        })
        .boxed()
}

// ---- running ----------------------------------------------------------------------

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("region", DataType::Utf8, true),
        Field::new("qty", DataType::Int64, true),
        Field::new("price", DataType::Float64, true),
    ]))
}

fn batch(rows: &[Seed]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.id))),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.region))),
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.qty))),
            Arc::new(Float64Array::from_iter(
                rows.iter().map(|r| r.price_halves.map(|h| h as f64 / 2.0)),
            )),
        ],
    )
    .expect("rows of the schema")
}

/// Sorted, with -0.0 as 0.0 (the sort key uses the bits).
fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    for r in &mut rows {
        r.3 = r.3.map(|p| p + 0.0);
    }
    rows.sort_by(|a, b| {
        (a.0, &a.1, a.2, a.3.map(f64::to_bits)).cmp(&(b.0, &b.1, b.2, b.3.map(f64::to_bits)))
    });
    rows
}

fn rows_of(batches: &[RecordBatch]) -> Vec<Row> {
    let mut out = Vec::new();
    for b in batches {
        let region = cast(b.column(1), &DataType::Utf8).expect("region as text");
        let (id, region, qty, price) = (
            b.column(0).as_primitive::<Int64Type>(),
            region.as_string::<i32>(),
            b.column(2).as_primitive::<Int64Type>(),
            b.column(3).as_primitive::<Float64Type>(),
        );
        for i in 0..b.num_rows() {
            out.push((
                id.value(i),
                region.is_valid(i).then(|| region.value(i).to_owned()),
                qty.is_valid(i).then(|| qty.value(i)),
                price.is_valid(i).then(|| price.value(i)),
            ));
        }
    }
    sorted(out)
}

/// What our side did: each statement's count, the end state, or the first error.
#[derive(Debug, Default)]
struct Outcome {
    counts: Vec<u64>,
    rows: Vec<Row>,
    error: Option<String>,
}

async fn run_ours(case: &Case, dir: &Path) -> Outcome {
    let mut options = TableOptions::new().deletion_vectors(case.deletion_vectors);
    if case.partitioned {
        options = options.partition_by([PartitionField::identity("region")]);
    }
    let table = Table::create(
        Location::local(dir).expect("a local table location"),
        schema(),
        options,
    )
    .await
    .expect("an empty table");
    // Two files when there are rows enough, so that statements touch some files only.
    let (a, b) = case.rows.split_at(case.rows.len() / 2);
    for part in [a, b] {
        if !part.is_empty() {
            table.append(vec![batch(part)]).await.expect("the rows");
        }
    }
    let engine = QueryEngine::builder().target_partitions(2).build();
    engine
        .register_writable("t", Arc::new(table))
        .expect("a writable table");
    let mut out = Outcome::default();
    for sql in &case.statements {
        match engine.sql(sql).await {
            Ok(r) => out.counts.push(
                r.batches()[0]
                    .column(0)
                    .as_primitive::<UInt64Type>()
                    .value(0),
            ),
            Err(e) => {
                out.error = Some(format!("{sql}: {e}"));
                return out;
            }
        }
    }
    match engine
        .query(
            "SELECT id, region, qty, price FROM t",
            QueryOptions::new().bypass_cache(),
        )
        .await
    {
        Ok(r) => out.rows = rows_of(r.batches()),
        Err(e) => out.error = Some(format!("reading the end state: {e}")),
    }
    out
}

fn peer_rows(v: &Value) -> Vec<Row> {
    let rows = v
        .as_array()
        .expect("rows as an array")
        .iter()
        .map(|r| {
            (
                r[0].as_i64().expect("an id"),
                r[1].as_str().map(str::to_owned),
                r[2].as_i64(),
                r[3].as_f64(),
            )
        })
        .collect();
    sorted(rows)
}

/// Runs `cases` on our side and in one Python process; the problems, by case index.
fn check(rt: &tokio::runtime::Runtime, python: &str, cases: &[Case]) -> Vec<(usize, String)> {
    let dirs: Vec<tempfile::TempDir> = cases
        .iter()
        .map(|_| tempfile::tempdir().expect("a temporary directory"))
        .collect();
    let ours: Vec<Outcome> = rt.block_on(async {
        let mut out = Vec::new();
        for (case, dir) in cases.iter().zip(&dirs) {
            out.push(run_ours(case, dir.path()).await);
        }
        out
    });
    let input = json!({
        "cases": cases.iter().zip(&dirs).map(|(c, d)| {
            let mut setup = vec![CREATE.to_owned()];
            if !c.rows.is_empty() {
                setup.push(format!("INSERT INTO t VALUES {}", values_list(&c.rows, false)));
            }
            json!({
                "setup": setup,
                "statements": c.statements,
                "delta": d.path().to_str().expect("a UTF-8 path"),
            })
        }).collect::<Vec<_>>()
    });
    let file = tempfile::NamedTempFile::new().expect("a temporary file");
    std::fs::write(file.path(), input.to_string()).expect("the cases written");
    let script = format!(
        "{}/../benches/peers/dml_sequences.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let run = Command::new(python)
        .arg(&script)
        .arg(file.path())
        .output()
        .unwrap_or_else(|e| panic!("running {python} {script}: {e}"));
    assert!(
        run.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let peers: Value = serde_json::from_slice(&run.stdout).expect("the script's JSON");
    let peers = peers["cases"].as_array().expect("one result per case");
    assert_eq!(peers.len(), cases.len());
    eprintln!(
        "{} cases: {} statements, {} changed rows, {} end rows",
        cases.len(),
        ours.iter().map(|o| o.counts.len()).sum::<usize>(),
        ours.iter().flat_map(|o| &o.counts).sum::<u64>(),
        ours.iter().map(|o| o.rows.len()).sum::<usize>(),
    );
    let mut problems = Vec::new();
    for (i, (ours, peer)) in ours.iter().zip(peers).enumerate() {
        let mut why = Vec::new();
        if let Some(e) = &ours.error {
            why.push(format!("ours failed: {e}"));
        }
        if let Some(e) = peer["error"].as_str() {
            why.push(format!("the peer failed: {e}"));
        }
        if why.is_empty() {
            let counts: Vec<Option<u64>> = peer["counts"]
                .as_array()
                .expect("counts")
                .iter()
                .map(Value::as_u64)
                .collect();
            let mine: Vec<Option<u64>> = ours.counts.iter().copied().map(Some).collect();
            if mine != counts {
                why.push(format!("counts: ours {mine:?}, DuckDB {counts:?}"));
            }
            let duckdb = peer_rows(&peer["rows"]);
            if ours.rows != duckdb {
                why.push(format!(
                    "end state:\n  ours   {:?}\n  DuckDB {duckdb:?}",
                    ours.rows
                ));
            }
            let deltars = peer_rows(&peer["delta_rows"]);
            if deltars != duckdb {
                why.push(format!(
                    "delta-rs reads our table as\n         {deltars:?}\n  DuckDB {duckdb:?}"
                ));
            }
        }
        if !why.is_empty() {
            problems.push((i, why.join("\n")));
        }
    }
    problems
}

/// Shrinks the failing case `tree` holds (its current value fails with `why`): the
/// simplest failing case found and its problem.
fn shrink(
    rt: &tokio::runtime::Runtime,
    python: &str,
    tree: &mut dyn ValueTree<Value = Case>,
    mut why: String,
) -> (Case, String) {
    let mut best = tree.current();
    if !tree.simplify() {
        return (best, why);
    }
    for _ in 0..SHRINK_STEPS {
        let candidate = tree.current();
        let more = match check(rt, python, std::slice::from_ref(&candidate)).pop() {
            Some((_, w)) => {
                best = candidate;
                why = w;
                tree.simplify()
            }
            None => tree.complicate(),
        };
        if !more {
            break;
        }
    }
    (best, why)
}

fn peers_python() -> Option<String> {
    match std::env::var("LAKEHOUSE_PEERS_PYTHON") {
        Ok(p) => Some(p),
        Err(_) if std::env::var_os("CI").is_some() => panic!(
            "LAKEHOUSE_PEERS_PYTHON is not set under CI: DML is not checked against DuckDB \
             (bash benches/peers/setup.sh makes the venv)"
        ),
        Err(_) => {
            eprintln!("LAKEHOUSE_PEERS_PYTHON is not set: skipping the DuckDB DML comparison");
            None
        }
    }
}

#[test]
fn random_dml_sequences_end_as_in_duckdb() {
    let Some(python) = peers_python() else {
        return;
    };
    let seed: u64 = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("a clock after 1970")
                .as_nanos() as u64
        });
    let mut runner = TestRunner::new(Config {
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    });
    let strategy = case();
    let mut trees: Vec<_> = (0..CASES)
        .map(|_| strategy.new_tree(&mut runner).expect("a case"))
        .collect();
    let cases: Vec<Case> = trees.iter().map(|t| t.current()).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let problems = check(&rt, &python, &cases);
    let Some((first, why)) = problems.first().cloned() else {
        return;
    };
    let summary: Vec<String> = problems
        .iter()
        .map(|(i, w)| {
            let line = w.lines().next().unwrap_or_default();
            format!("  case {i}: {}", line.chars().take(400).collect::<String>())
        })
        .collect();
    let (minimal, minimal_why) = shrink(&rt, &python, trees[first].as_mut(), why.clone());
    panic!(
        "PROPTEST_RNG_SEED={seed}: {} of {CASES} cases differ from DuckDB:\n{}\n\n\
         case {first}: {:#?}\n{why}\n\nshrunk to: {minimal:#?}\n{minimal_why}",
        problems.len(),
        summary.join("\n"),
        cases[first]
    );
}
