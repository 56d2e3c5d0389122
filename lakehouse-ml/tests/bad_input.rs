//! Bad input gives typed errors, never a panic.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, Float64Array, Int64Array, RecordBatch, StringArray};
use lakehouse_ml::{
    Als, AlsParams, Columns, Dataset, ErrorKind, Event, Id, ItemItem, Popularity, Query,
    Recommender, SegmentParams, Segments, Similarity, Synthetic, evaluate, read_movielens,
    read_movielens_file,
};
use ndarray::Array2;

use crate::common::{planted, small_als};

fn models() -> Vec<Box<dyn Recommender>> {
    vec![
        Box::new(small_als(1)),
        Box::new(ItemItem::cosine()),
        Box::new(ItemItem::bm25()),
        Box::new(Popularity::new()),
    ]
}

#[test]
fn empty_data_and_unfitted_models() {
    for mut model in models() {
        let e = model.recommend(&Id::from(1), &Query::top(5)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFitted, "{}", model.name());
        let e = model.update(&[Event::new(1, 2)]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFitted, "{}", model.name());
        let e = model.fit(&Dataset::new()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::EmptyData, "{}", model.name());
        let e = evaluate(model.as_ref(), &Dataset::new(), 10).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::EmptyData);
    }
    let data = planted();
    let mut als = small_als(1);
    als.fit(&data.dataset).unwrap();
    assert_eq!(
        evaluate(&als, &data.dataset, 0).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    // Segments need at least as many users as clusters.
    let e = Segments::fit_features(
        &[Id::from(1)],
        Array2::<f64>::zeros((1, 2)).view(),
        &data.dataset,
        SegmentParams::default(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = Segments::fit_features(
        &[Id::from(1), Id::from(2)],
        Array2::<f64>::zeros((3, 2)).view(),
        &data.dataset,
        SegmentParams::default(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[test]
fn unknown_users_and_items() {
    let data = planted();
    for mut model in models() {
        model.fit(&data.dataset).unwrap();
        let nobody = Id::from("nobody");
        match model.recommend(&nobody, &Query::top(5)) {
            // Popularity answers everyone with the global list.
            Ok(recs) => {
                assert_eq!(model.name(), "popularity");
                assert_eq!(recs.len(), 5);
            }
            Err(e) => assert_eq!(e.kind(), ErrorKind::UnknownUser, "{}", model.name()),
        }
        match model.similar_items(&Id::from("no-such-item"), 5) {
            Err(e) if model.name() == "popularity" => assert_eq!(e.kind(), ErrorKind::Unsupported),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::UnknownItem, "{}", model.name());
                assert_eq!(e.context().key.as_deref(), Some("no-such-item"));
            }
            Ok(r) => panic!("{}: similar items of an unknown item: {r:?}", model.name()),
        }
    }
    let mut als = small_als(2);
    als.fit(&data.dataset).unwrap();
    assert_eq!(
        als.score(&Id::from(1), &Id::from("nothing"))
            .unwrap_err()
            .kind(),
        ErrorKind::UnknownItem
    );
    assert_eq!(
        als.user_factors(&Id::from(-1)).unwrap_err().kind(),
        ErrorKind::UnknownUser
    );
}

#[test]
fn users_only_in_the_test_split_are_unknown_and_skipped() {
    let mut d = Dataset::new();
    for u in 0..20i64 {
        for i in 0..6i64 {
            d.push(u, (u + i) % 10, 1.0, u).unwrap();
        }
    }
    // User 99 interacts only at the latest time: the time split puts them in test.
    d.push(99, 1, 1.0, 1_000).unwrap();
    let (train, test) = d.split_by_time(0.05).unwrap();
    let mut als = small_als(3);
    als.fit(&train).unwrap();
    assert_eq!(
        als.recommend(&Id::from(99), &Query::top(3))
            .unwrap_err()
            .kind(),
        ErrorKind::UnknownUser
    );
    let m = evaluate(&als, &test, 3).unwrap();
    assert_eq!(m.skipped_users, 1);
    assert_eq!(
        m.users + m.skipped_users,
        crate::common::active_users(&test).len()
    );
}

#[test]
fn nan_negative_and_infinite_weights_are_rejected() {
    let mut d = Dataset::new();
    for w in [f32::NAN, -0.5, f32::INFINITY, f32::NEG_INFINITY] {
        let e = d.push(1, 2, w, 0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert_eq!(e.context().key.as_deref(), Some("1"));
        for mut model in models() {
            model.fit(&planted().dataset).unwrap();
            let e = model.update(&[Event::new(1, 2).weight(w)]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{}", model.name());
        }
    }
    assert!(d.is_empty());
    // Zero weights are allowed and give no duplicate recommendation.
    let mut d = Dataset::new();
    for u in 0..6i64 {
        d.push(u, "a", 0.0, 0).unwrap();
        d.push(u, "b", 0.0, 0).unwrap();
        d.push(u, "c", 1.0, 0).unwrap();
    }
    d.push(10, "a", 0.0, 0).unwrap();
    d.push(10, "x", 0.0, 0).unwrap();
    for mut model in models() {
        model.fit(&d).unwrap();
        let recs = model.recommend(&Id::from(10), &Query::top(10)).unwrap();
        let mut ids: Vec<_> = recs.iter().map(|s| s.item.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(
            ids.len(),
            recs.len(),
            "{}: duplicates in {recs:?}",
            model.name()
        );
    }
}

#[test]
fn arrow_batches_with_bad_columns() {
    let batch = |cols: Vec<(&str, ArrayRef)>| RecordBatch::try_from_iter(cols).unwrap();
    let users: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3]));
    let items: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "a"]));
    let good = batch(vec![
        ("user", users.clone()),
        ("item", items.clone()),
        ("w", Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0]))),
        (
            "event",
            Arc::new(StringArray::from(vec!["view", "buy", "wishlist"])),
        ),
        ("ts", Arc::new(Int64Array::from(vec![10, 20, 30]))),
    ]);
    let cols = Columns::new("user", "item").weight("w").timestamp("ts");
    let d = Dataset::from_batches([&good], &cols).unwrap();
    assert_eq!(d.len(), 3);
    assert_eq!(d.items().get(&Id::from("b")), Some(1));
    assert_eq!(d.interactions()[2].weight, 3.0);
    assert_eq!(d.interactions()[1].timestamp, 20);
    // Event types map to weights; unknown types are skipped.
    let by_type = Columns::new("user", "item").event_type("event", [("view", 1.0), ("buy", 5.0)]);
    let d = Dataset::from_batches([&good], &by_type).unwrap();
    assert_eq!(d.len(), 2);
    assert_eq!(d.interactions()[1].weight, 5.0);

    let e = Dataset::from_batches([&good], &Columns::new("customer", "item")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ColumnNotFound);
    assert_eq!(e.context().column.as_deref(), Some("customer"));
    let e = Dataset::from_batches([&good], &Columns::new("w", "item")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TypeMismatch);
    let e =
        Dataset::from_batches([&good], &Columns::new("user", "item").weight("event")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TypeMismatch);
    let e =
        Dataset::from_batches([&good], &Columns::new("user", "item").timestamp("w")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TypeMismatch);

    let nan = batch(vec![
        ("user", users.clone()),
        ("item", items.clone()),
        ("w", Arc::new(Float32Array::from(vec![1.0, f32::NAN, 1.0]))),
    ]);
    let mut d = Dataset::new();
    let e = d
        .extend_from_batch(&nan, &Columns::new("user", "item").weight("w"))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert_eq!(e.context().offset, Some(1));
    assert!(d.is_empty(), "nothing is added from a failing batch");
    let nulls = batch(vec![
        (
            "user",
            Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
        ),
        ("item", items),
    ]);
    let e = d
        .extend_from_batch(&nulls, &Columns::new("user", "item"))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(d.is_empty());
}

#[test]
fn malformed_movielens_lines() {
    let good = "1\t10\t5\t881250949\n2\t10\t3\t881250950\n";
    assert_eq!(read_movielens(good.as_bytes()).unwrap().len(), 2);
    for (text, kind, line) in [
        ("1\t10\t5\n", ErrorKind::Corrupt, 1),
        ("1\t10\t5\t881250949\n2\t10\n", ErrorKind::Corrupt, 2),
        ("one\t10\t5\t881250949\n", ErrorKind::Corrupt, 1),
        ("1\t10\tfive\t881250949\n", ErrorKind::Corrupt, 1),
        ("1\t10\t5\t88.5\n", ErrorKind::Corrupt, 1),
        (
            "1\t10\t5\t881250949\n\n1\t11\t-2\t881250949\n",
            ErrorKind::InvalidInput,
            3,
        ),
        ("1\t10\tNaN\t881250949\n", ErrorKind::InvalidInput, 1),
        ("1\t10\tinf\t881250949\n", ErrorKind::InvalidInput, 1),
    ] {
        let e = read_movielens(text.as_bytes()).unwrap_err();
        assert_eq!(e.kind(), kind, "{text:?}: {e}");
        assert_eq!(e.context().offset, Some(line), "{text:?}");
    }
    let bytes: &[u8] = &[b'1', b'\t', 0xff, 0xfe, b'\n'];
    let e = read_movielens(bytes).unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::Corrupt,
        "a line that is not UTF-8: {e}"
    );
    assert_eq!(e.context().offset, Some(1));
    let e = read_movielens_file("/nonexistent/u.data").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert_eq!(e.context().path.as_deref(), Some("/nonexistent/u.data"));
}

#[test]
fn bad_parameters() {
    for b in [
        Als::builder().factors(0),
        Als::builder().cg_steps(0),
        Als::builder().regularization(0.0),
        Als::builder().regularization(f32::INFINITY),
        Als::builder().alpha(f32::NAN),
    ] {
        assert_eq!(b.build().unwrap_err().kind(), ErrorKind::InvalidInput);
    }
    assert!(ItemItem::new(Similarity::Bm25 { k1: -1.0, b: 0.5 }, 10).is_err());
    assert!(ItemItem::new(Similarity::Bm25 { k1: 1.0, b: 1.5 }, 10).is_err());
    for s in [
        Synthetic::new(0, 10, 10),
        Synthetic::new(10, 10, 60),
        Synthetic::new(10, 10, 10).groups(0),
        Synthetic::new(10, 10, 10).groups(11),
        Synthetic::new(10, 10, 10).affinity(1.5),
        Synthetic::new(usize::MAX, usize::MAX, 10),
    ] {
        assert_eq!(
            s.generate().unwrap_err().kind(),
            ErrorKind::InvalidInput,
            "{s:?}"
        );
    }
    let p = AlsParams {
        factors: 2,
        ..AlsParams::default()
    };
    let ids = |n: i64| (0..n).map(Id::from).collect::<Vec<_>>();
    for (users, uf, items, yf) in [
        (ids(2), vec![0.0; 3], ids(1), vec![0.0; 2]),
        (ids(1), vec![0.0; 2], ids(2), vec![0.0; 2]),
        (ids(1), vec![f32::NAN, 0.0], ids(1), vec![0.0; 2]),
        (
            vec![Id::from(1), Id::from(1)],
            vec![0.0; 4],
            ids(1),
            vec![0.0; 2],
        ),
    ] {
        let e = Als::from_factors(p, users, uf, items, yf).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
    assert_eq!(
        planted().dataset.split_random(1.5, 0).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        planted()
            .dataset
            .split_by_time(f64::NAN)
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
}

#[test]
fn extreme_timestamps_do_not_overflow() {
    let mut d = Dataset::new();
    d.push(1, "old", 1.0, i64::MIN).unwrap();
    d.push(2, "new", 1.0, i64::MAX).unwrap();
    d.push(3, "old", 1.0, 0).unwrap();
    let mut t = Popularity::trending(std::time::Duration::from_secs(60)).unwrap();
    t.fit(&d).unwrap();
    t.update(&[
        Event::new(4, "old").at_micros(i64::MIN),
        Event::new(5, "new").at_micros(i64::MAX),
    ])
    .unwrap();
    let top = t.top_items(&Query::top(2)).unwrap();
    assert_eq!(top.len(), 2);
    assert!(top.iter().all(|s| s.score.is_finite()));
    let mut reader = String::new();
    reader.push_str(&format!("1\t2\t3\t{}\n", i64::MAX));
    let d = read_movielens(reader.as_bytes()).unwrap();
    assert_eq!(d.interactions()[0].timestamp, i64::MAX);
}
