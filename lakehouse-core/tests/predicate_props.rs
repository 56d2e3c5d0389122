use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use lakehouse_core::{ColumnStats, FileStats, Predicate, Scalar, col};
use proptest::prelude::*;

fn batch(a: &[Option<i64>], s: &[Option<String>]) -> RecordBatch {
    RecordBatch::try_from_iter([
        ("a", Arc::new(Int64Array::from(a.to_vec())) as ArrayRef),
        ("s", Arc::new(StringArray::from(s.to_vec()))),
    ])
    .unwrap()
}

fn leaf() -> impl Strategy<Value = Predicate> {
    let lit = prop_oneof![4 => (-5i64..5).prop_map(Scalar::Int64), 1 => Just(Scalar::Null)];
    let text = prop_oneof![
        4 => "[a-c]{0,2}".prop_map(Scalar::Utf8),
        1 => Just(Scalar::Null)
    ];
    prop_oneof![
        (0..6usize, lit.clone()).prop_map(|(op, v)| match op {
            0 => col("a").eq(v),
            1 => col("a").not_eq(v),
            2 => col("a").lt(v),
            3 => col("a").lt_eq(v),
            4 => col("a").gt(v),
            _ => col("a").gt_eq(v),
        }),
        (lit.clone(), lit.clone(), any::<bool>()).prop_map(|(l, h, n)| {
            let p = col("a").between(l, h);
            if n { p.negate() } else { p }
        }),
        (prop::collection::vec(lit, 0..4), any::<bool>()).prop_map(|(v, n)| {
            let p = col("a").in_list(v);
            if n { p.negate() } else { p }
        }),
        (0..2usize, text.clone()).prop_map(|(op, v)| if op == 0 {
            col("s").eq(v)
        } else {
            col("s").gt(v)
        }),
        any::<bool>().prop_map(|n| if n {
            col("a").is_null()
        } else {
            col("s").is_not_null()
        }),
        any::<bool>().prop_map(Predicate::Literal),
    ]
}

fn predicate() -> impl Strategy<Value = Predicate> {
    leaf().prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Predicate::And),
            prop::collection::vec(inner.clone(), 0..3).prop_map(Predicate::Or),
            inner.prop_map(|p| Predicate::Not(Box::new(p))),
        ]
    })
}

fn rows() -> impl Strategy<Value = (Vec<Option<i64>>, Vec<Option<String>>)> {
    (1..12usize).prop_flat_map(|n| {
        (
            prop::collection::vec(prop::option::weighted(0.8, -6i64..6), n),
            prop::collection::vec(prop::option::weighted(0.8, "[a-c]{0,2}"), n),
        )
    })
}

fn kleene(a: &BooleanArray) -> Vec<Option<bool>> {
    (0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i)))
        .collect()
}

proptest! {
    /// Pruning never skips a file that holds a matching row.
    #[test]
    fn pruning_is_sound(p in predicate(), (a, s) in rows()) {
        let b = batch(&a, &s);
        let mut columns = BTreeMap::new();
        for name in ["a", "s"] {
            columns.insert(name.to_owned(), ColumnStats::from_array(b.column_by_name(name).unwrap().as_ref()).unwrap());
        }
        let file = FileStats { path: "f".into(), num_rows: b.num_rows() as u64, columns, ..Default::default() };
        let matches = p.evaluate(&b).unwrap().true_count();
        prop_assert!(matches == 0 || p.can_match(&file), "{} matches {} rows but was pruned", p, matches);
    }

    /// `negate` is the three-valued NOT, and removing `Not` keeps the meaning.
    #[test]
    fn negation_normal_form_keeps_meaning(p in predicate(), (a, s) in rows()) {
        let b = batch(&a, &s);
        let value = kleene(&p.evaluate(&b).unwrap());
        let negated = kleene(&p.negate().evaluate(&b).unwrap());
        let expected: Vec<Option<bool>> = value.iter().map(|v| v.map(|x| !x)).collect();
        prop_assert_eq!(negated, expected);
        prop_assert_eq!(kleene(&p.without_not().evaluate(&b).unwrap()), value);
    }
}
