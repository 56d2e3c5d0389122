//! Entry points for fuzzing the predicate machinery (feature `fuzzing`, off by
//! default; not a stable API).
//!
//! The core crate parses no text: predicates reach it built by callers (the query
//! engine translates SQL into them). [`evaluate_predicate`] therefore builds an
//! arbitrary predicate from bytes, and [`check_predicate`] runs every operation of a
//! predicate (validation, evaluation, filtering, pruning, negation, display) against a
//! sample batch and its statistics, discarding the outcome: errors are expected, a
//! panic is a defect.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array,
    Int8Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    TimestampMillisecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use crate::{CmpOp, ColumnStats, Predicate, Scalar, StatsProvider};

/// The columns of [`sample_batch`]: one per type a predicate compares.
pub const COLUMNS: &[&str] = &[
    "i8", "i32", "i64", "u64", "f32", "f64", "s", "bin", "b", "d", "ts_ms", "ts", "dec",
];

/// A batch of five rows with one column per [`COLUMNS`] entry (each holding a null).
pub fn sample_batch() -> &'static RecordBatch {
    static BATCH: OnceLock<RecordBatch> = OnceLock::new();
    BATCH.get_or_init(|| {
        let schema = Schema::new(vec![
            Field::new("i8", DataType::Int8, true),
            Field::new("i32", DataType::Int32, true),
            Field::new("i64", DataType::Int64, true),
            Field::new("u64", DataType::UInt64, true),
            Field::new("f32", DataType::Float32, true),
            Field::new("f64", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("bin", DataType::Binary, true),
            Field::new("b", DataType::Boolean, true),
            Field::new("d", DataType::Date32, true),
            Field::new(
                "ts_ms",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("dec", DataType::Decimal128(10, 2), true),
        ]);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int8Array::from(vec![
                Some(i8::MIN),
                Some(-1),
                None,
                Some(7),
                Some(i8::MAX),
            ])),
            Arc::new(Int32Array::from(vec![
                Some(i32::MIN),
                Some(0),
                None,
                Some(7),
                Some(i32::MAX),
            ])),
            Arc::new(Int64Array::from(vec![
                Some(i64::MIN),
                Some(0),
                None,
                Some(7),
                Some(i64::MAX),
            ])),
            Arc::new(UInt64Array::from(vec![
                Some(0),
                Some(1),
                None,
                Some(7),
                Some(u64::MAX),
            ])),
            Arc::new(Float32Array::from(vec![
                Some(f32::NAN),
                Some(-0.0),
                None,
                Some(1.5),
                Some(f32::INFINITY),
            ])),
            Arc::new(Float64Array::from(vec![
                Some(f64::NEG_INFINITY),
                Some(0.0),
                None,
                Some(1.5),
                Some(f64::NAN),
            ])),
            Arc::new(StringArray::from(vec![
                Some(""),
                Some("a"),
                None,
                Some("é"),
                Some("zz"),
            ])),
            Arc::new(BinaryArray::from(vec![
                Some(&b""[..]),
                Some(b"\x00"),
                None,
                Some(b"ab"),
                Some(b"\xff"),
            ])),
            Arc::new(BooleanArray::from(vec![
                Some(true),
                Some(false),
                None,
                Some(true),
                Some(false),
            ])),
            Arc::new(Date32Array::from(vec![
                Some(i32::MIN),
                Some(0),
                None,
                Some(19_000),
                Some(i32::MAX),
            ])),
            Arc::new(TimestampMillisecondArray::from(vec![
                Some(i64::MIN),
                Some(0),
                None,
                Some(1),
                Some(i64::MAX),
            ])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![
                    Some(i64::MIN),
                    Some(0),
                    None,
                    Some(1),
                    Some(i64::MAX),
                ])
                .with_timezone("UTC"),
            ),
            Arc::new(
                Decimal128Array::from(vec![
                    Some(-9_999_999_999),
                    Some(0),
                    None,
                    Some(125),
                    Some(9_999_999_999),
                ])
                .with_precision_and_scale(10, 2)
                .expect("precision 10, scale 2 is valid"),
            ),
        ];
        RecordBatch::try_new(Arc::new(schema), columns).expect("the sample columns match")
    })
}

/// Statistics of a set of rows, by column.
#[derive(Debug)]
struct Stats {
    rows: Option<u64>,
    columns: HashMap<String, ColumnStats>,
}

impl StatsProvider for Stats {
    fn row_count(&self) -> Option<u64> {
        self.rows
    }
    fn column_stats(&self, column: &str) -> Option<ColumnStats> {
        self.columns.get(column).cloned()
    }
}

fn sample_stats() -> &'static Stats {
    static STATS: OnceLock<Stats> = OnceLock::new();
    STATS.get_or_init(|| {
        let batch = sample_batch();
        let columns = batch
            .schema()
            .fields()
            .iter()
            .zip(batch.columns())
            .filter_map(|(f, a)| Some((f.name().clone(), ColumnStats::from_array(a).ok()?)))
            .collect();
        Stats {
            rows: Some(batch.num_rows() as u64),
            columns,
        }
    })
}

/// Runs every operation of `p` on the sample batch, its statistics, and statistics
/// that name a column with a bound of another type; discards the outcomes.
pub fn check_predicate(p: &Predicate) {
    let batch = sample_batch();
    let _ = p.validate(&batch.schema());
    let _ = p.evaluate(batch);
    let _ = p.filter(batch);
    let _ = p.can_match(sample_stats());
    let _ = p.columns();
    let _ = p.conjuncts();
    let _ = p.to_string();
    let negated = p.negate();
    let _ = negated.can_match(sample_stats());
    let _ = negated.evaluate(batch);
    let plain = p.without_not();
    let _ = plain.can_match(sample_stats());
    // Statistics that disagree with the column type (a source may report anything).
    let odd = Stats {
        rows: None,
        columns: COLUMNS
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let v = scalar(i as u8, 0x5a);
                (
                    (*c).to_owned(),
                    ColumnStats {
                        min: Some(v.clone()),
                        max: Some(v),
                        null_count: Some(u64::MAX),
                    },
                )
            })
            .collect(),
    };
    let _ = p.can_match(&odd);
}

/// Reads bytes one at a time, yielding zeros once they run out.
#[derive(Debug)]
struct Bytes<'a> {
    rest: &'a [u8],
}

impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&b, rest)) => {
                self.rest = rest;
                b
            }
            None => 0,
        }
    }

    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        for b in &mut out {
            *b = self.next();
        }
        out
    }
}

/// A scalar of the kind `kind` picks, built from `seed`'s bits (edge values included).
fn scalar(kind: u8, seed: u8) -> Scalar {
    let edge = |small: i64, min: i64, max: i64| match seed % 4 {
        0 => min,
        1 => max,
        _ => small,
    };
    let small = i64::from(seed as i8);
    match kind % 18 {
        0 => Scalar::Null,
        1 => Scalar::Boolean(seed.is_multiple_of(2)),
        2 => Scalar::Int8(seed as i8),
        3 => Scalar::Int16(edge(small, i16::MIN.into(), i16::MAX.into()) as i16),
        4 => Scalar::Int32(edge(small, i32::MIN.into(), i32::MAX.into()) as i32),
        5 => Scalar::Int64(edge(small, i64::MIN, i64::MAX)),
        6 => Scalar::UInt8(seed),
        7 => Scalar::UInt32(u32::from(seed) << (seed % 25)),
        8 => Scalar::UInt64(if seed.is_multiple_of(3) {
            u64::MAX
        } else {
            u64::from(seed)
        }),
        9 => Scalar::Float32([f32::NAN, -0.0, 1.5, f32::INFINITY][usize::from(seed % 4)]),
        10 => Scalar::Float64([f64::NAN, -0.0, 1e300, f64::NEG_INFINITY][usize::from(seed % 4)]),
        11 => Scalar::Utf8(["", "a", "é", "zz", "\u{0}"][usize::from(seed % 5)].to_owned()),
        12 => Scalar::Binary(vec![seed; usize::from(seed % 3)]),
        13 => Scalar::Date32(edge(small, i32::MIN.into(), i32::MAX.into()) as i32),
        14 => Scalar::Timestamp {
            value: edge(small, i64::MIN, i64::MAX),
            unit: [
                TimeUnit::Second,
                TimeUnit::Millisecond,
                TimeUnit::Microsecond,
                TimeUnit::Nanosecond,
            ][usize::from(seed % 4)],
            tz: (seed.is_multiple_of(2)).then(|| "UTC".into()),
        },
        15 => Scalar::Decimal128 {
            value: if seed.is_multiple_of(3) {
                i128::MAX
            } else {
                i128::from(small)
            },
            precision: seed % 40,
            scale: (seed as i8) % 40,
        },
        16 => Scalar::Int64(small),
        _ => Scalar::Utf8(format!("{seed}")),
    }
}

fn build(b: &mut Bytes<'_>, depth: u32) -> Predicate {
    let op = b.next();
    let column = |b: &mut Bytes<'_>| {
        let c = b.next();
        if c == 0xff {
            "missing".to_owned()
        } else {
            COLUMNS[usize::from(c) % COLUMNS.len()].to_owned()
        }
    };
    let value = |b: &mut Bytes<'_>| {
        let [k, s] = b.take::<2>();
        scalar(k, s)
    };
    match if depth >= 6 { op % 5 } else { op % 8 } {
        0 => Predicate::Literal(op & 0x80 != 0),
        1 => Predicate::Compare {
            column: column(b),
            op: [
                CmpOp::Eq,
                CmpOp::NotEq,
                CmpOp::Lt,
                CmpOp::LtEq,
                CmpOp::Gt,
                CmpOp::GtEq,
            ][usize::from(b.next() % 6)],
            value: value(b),
        },
        2 => Predicate::Between {
            column: column(b),
            low: value(b),
            high: value(b),
            negated: op & 0x80 != 0,
        },
        3 => {
            let column = column(b);
            let n = b.next() % 5;
            Predicate::InList {
                column,
                values: (0..n).map(|_| value(b)).collect(),
                negated: op & 0x80 != 0,
            }
        }
        4 => Predicate::IsNull {
            column: column(b),
            negated: op & 0x80 != 0,
        },
        5 => Predicate::And((0..b.next() % 4).map(|_| build(b, depth + 1)).collect()),
        6 => Predicate::Or((0..b.next() % 4).map(|_| build(b, depth + 1)).collect()),
        _ => Predicate::Not(Box::new(build(b, depth + 1))),
    }
}

/// Builds a predicate over the sample columns from `bytes` (any bytes make one: an
/// operator, then its column, its literals and its parts, nested at most six deep)
/// and runs [`check_predicate`] on it.
pub fn evaluate_predicate(bytes: &[u8]) {
    let p = build(&mut Bytes { rest: bytes }, 0);
    check_predicate(&p);
}
