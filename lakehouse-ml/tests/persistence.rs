//! Saving and loading models: round trips, format versions, damaged files.

use lakehouse_ml::{
    Als, Ease, ErrorKind, FORMAT_VERSION, Id, ItemItem, Persist, Popularity, Query, Recommender,
    SegmentParams, Segments,
};

use crate::common::{planted, small_als};

fn saved<M: Persist>(model: &M) -> Vec<u8> {
    let mut bytes = Vec::new();
    model.save(&mut bytes).unwrap();
    bytes
}

fn same_recommendations(a: &dyn Recommender, b: &dyn Recommender) {
    for u in (1..=300i64).step_by(7) {
        let user = Id::from(u);
        assert_eq!(
            a.recommend(&user, &Query::top(10)).unwrap(),
            b.recommend(&user, &Query::top(10)).unwrap(),
            "{} user {u}",
            a.name()
        );
    }
}

#[test]
fn models_round_trip_through_bytes_and_files() {
    let data = planted();
    let mut als = small_als(1);
    als.fit(&data.dataset).unwrap();
    let mut item_item = ItemItem::bm25();
    item_item.fit(&data.dataset).unwrap();
    let mut popular = Popularity::new();
    popular.fit(&data.dataset).unwrap();

    let als2 = Als::load(saved(&als).as_slice()).unwrap();
    same_recommendations(&als, &als2);
    assert_eq!(
        als.user_factors(&Id::from(5)).unwrap(),
        als2.user_factors(&Id::from(5)).unwrap()
    );
    let item_item2 = ItemItem::load(saved(&item_item).as_slice()).unwrap();
    same_recommendations(&item_item, &item_item2);
    assert_eq!(
        item_item.similar_items(&Id::from(3), 5).unwrap(),
        item_item2.similar_items(&Id::from(3), 5).unwrap()
    );
    let popular2 = Popularity::load(saved(&popular).as_slice()).unwrap();
    same_recommendations(&popular, &popular2);
    let mut ease = Ease::new(40.0).unwrap();
    ease.fit(&data.dataset).unwrap();
    let ease2 = Ease::load(saved(&ease).as_slice()).unwrap();
    same_recommendations(&ease, &ease2);
    assert_eq!(ease2.regularization(), 40.0);
    assert_eq!(
        ease.similar_items(&Id::from(3), 5).unwrap(),
        ease2.similar_items(&Id::from(3), 5).unwrap()
    );
    assert_eq!(
        ease.weight(&Id::from(3), &Id::from(4)),
        ease2.weight(&Id::from(3), &Id::from(4))
    );
    let mut rp3 = ItemItem::rp3beta(0.8, 0.4, 30).unwrap();
    rp3.fit(&data.dataset).unwrap();
    let rp3_again = ItemItem::load(saved(&rp3).as_slice()).unwrap();
    assert_eq!(rp3_again.name(), "rp3beta");
    same_recommendations(&rp3, &rp3_again);
    // Another model's file is refused by kind.
    assert_eq!(
        Ease::load(saved(&item_item).as_slice()).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );

    let params = SegmentParams {
        clusters: 5,
        ..SegmentParams::default()
    };
    let segments = Segments::fit_on_als(&als, &data.dataset, params).unwrap();
    let segments2 = Segments::load(saved(&segments).as_slice()).unwrap();
    for s in 0..5 {
        assert_eq!(
            segments.recommend_segment(s, &Query::top(10)).unwrap(),
            segments2.recommend_segment(s, &Query::top(10)).unwrap()
        );
    }
    assert_eq!(
        segments2.segment_of(&Id::from(9)),
        segments.segment_of(&Id::from(9))
    );

    // A loaded model keeps learning online, like the original.
    let mut a = als.clone();
    let mut b = als2;
    let events = [lakehouse_ml::Event::new(1, 400).weight(4.0)];
    a.update(&events).unwrap();
    b.update(&events).unwrap();
    same_recommendations(&a, &b);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("als.model");
    als.save_file(&path).unwrap();
    let from_file = Als::load_file(&path).unwrap();
    same_recommendations(&als, &from_file);
    let e = Als::load_file(dir.path().join("missing.model")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert!(
        e.context()
            .path
            .as_deref()
            .is_some_and(|p| p.ends_with("missing.model"))
    );
}

#[test]
fn another_format_version_is_a_clear_error() {
    let mut popular = Popularity::new();
    popular.fit(&planted().dataset).unwrap();
    let mut bytes = saved(&popular);
    assert_eq!(&bytes[..4], b"LHML");
    assert_eq!(bytes[4..8], FORMAT_VERSION.to_le_bytes());
    bytes[4..8].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let e = Popularity::load(bytes.as_slice()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FormatVersion);
    assert_eq!(e.context().version, Some(u64::from(FORMAT_VERSION + 1)));
    let text = e.to_string();
    assert!(
        text.contains(&format!("version {}", FORMAT_VERSION + 1))
            && text.contains(&format!("reads {FORMAT_VERSION}")),
        "{text}"
    );
}

#[test]
fn damaged_files_give_typed_errors() {
    let data = planted();
    let mut als = small_als(2);
    als.fit(&data.dataset).unwrap();
    let bytes = saved(&als);

    // Empty, truncated header, bad magic, truncated body, garbage body.
    for broken in [
        Vec::new(),
        bytes[..6].to_vec(),
        [b"NOPE".as_slice(), &bytes[4..]].concat(),
        bytes[..bytes.len() / 2].to_vec(),
        [&bytes[..13], b"{not json".as_slice()].concat(),
    ] {
        let e = Als::load(broken.as_slice()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    }
    // A model of another kind.
    let e = ItemItem::load(bytes.as_slice()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("\"als\""), "{e}");
}

/// An edit of a saved model's JSON body.
type Edit = Box<dyn Fn(&mut serde_json::Value)>;

/// Replaces the JSON body of a saved model after editing it.
fn edit_body(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let kind_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = 10 + kind_len;
    let mut body: serde_json::Value = serde_json::from_slice(&bytes[header..]).unwrap();
    edit(&mut body);
    [bytes[..header].to_vec(), serde_json::to_vec(&body).unwrap()].concat()
}

#[test]
fn well_formed_but_inconsistent_bodies_are_rejected_at_load() {
    let data = planted();
    let mut als = small_als(3);
    als.fit(&data.dataset).unwrap();
    let bytes = saved(&als);
    let cases: Vec<Edit> = vec![
        Box::new(|v| {
            v["item_factors"].as_array_mut().unwrap().truncate(5);
        }),
        Box::new(|v| v["params"]["factors"] = 0.into()),
        Box::new(|v| v["params"]["factors"] = 7.into()),
        Box::new(|v| {
            v["item_norms"].as_array_mut().unwrap().pop();
        }),
        Box::new(|v| {
            v["item_gram"].as_array_mut().unwrap().pop();
        }),
    ];
    for (n, case) in cases.into_iter().enumerate() {
        let e = Als::load(edit_body(&bytes, case).as_slice()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "case {n}: {e}");
    }

    let mut item_item = ItemItem::cosine();
    item_item.fit(&data.dataset).unwrap();
    let bytes = saved(&item_item);
    let e = ItemItem::load(
        edit_body(&bytes, |v| {
            v["order"][0][0][0] = 1_000_000.into();
        })
        .as_slice(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");

    let mut ease = Ease::new(10.0).unwrap();
    let (small, _) = data.dataset.split_random(0.5, 1).unwrap();
    ease.fit(&small).unwrap();
    let bytes = saved(&ease);
    let cases: Vec<Edit> = vec![
        Box::new(|v| {
            v["weights"].as_array_mut().unwrap().pop();
        }),
        Box::new(|v| v["regularization"] = (-1.0).into()),
        Box::new(|v| v["items"] = 1_000_000.into()),
    ];
    for (n, case) in cases.into_iter().enumerate() {
        let e = Ease::load(edit_body(&bytes, case).as_slice()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "EASE case {n}: {e}");
    }

    let mut popular = Popularity::new();
    popular.fit(&data.dataset).unwrap();
    let bytes = saved(&popular);
    let e = Popularity::load(
        edit_body(&bytes, |v| {
            v["as_of"].as_array_mut().unwrap().pop();
        })
        .as_slice(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");

    let segments = Segments::fit_on_als(
        &als,
        &data.dataset,
        SegmentParams {
            clusters: 3,
            ..SegmentParams::default()
        },
    )
    .unwrap();
    let bytes = saved(&segments);
    for case in [
        Box::new(|v: &mut serde_json::Value| v["dims"] = 0.into()) as Edit,
        Box::new(|v: &mut serde_json::Value| {
            v["centroids"].as_array_mut().unwrap().pop();
        }),
    ] {
        let e = Segments::load(edit_body(&bytes, case).as_slice()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    }
}

/// Names in `dir` other than `keep`.
fn strays(dir: &std::path::Path, keep: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect();
    names.sort();
    names
}

#[test]
fn saves_to_targets_of_one_stem_do_not_share_a_temporary_file() {
    let data = planted();
    let mut als = small_als(1);
    als.fit(&data.dataset).unwrap();
    let mut popular = Popularity::new();
    popular.fit(&data.dataset).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // `model.tmp` is a target of its own: saving `model.als` must not touch it.
    let (a, b) = (dir.path().join("model.tmp"), dir.path().join("model.als"));
    popular.save_file(&a).unwrap();
    als.save_file(&b).unwrap();
    same_recommendations(&popular, &Popularity::load_file(&a).unwrap());
    same_recommendations(&als, &Als::load_file(&b).unwrap());
    assert_eq!(
        strays(dir.path(), &["model.tmp", "model.als"]),
        Vec::<String>::new()
    );

    // Concurrent saves to targets of one stem in one directory all load back.
    let targets: Vec<_> = ["als", "pop", "bin", "json"]
        .iter()
        .map(|ext| dir.path().join(format!("concurrent.{ext}")))
        .collect();
    for _ in 0..5 {
        let barrier = std::sync::Barrier::new(targets.len());
        std::thread::scope(|s| {
            for (i, path) in targets.iter().enumerate() {
                let (barrier, als, popular) = (&barrier, &als, &popular);
                s.spawn(move || {
                    barrier.wait();
                    if i % 2 == 0 {
                        als.save_file(path).unwrap();
                    } else {
                        popular.save_file(path).unwrap();
                    }
                });
            }
        });
        for (i, path) in targets.iter().enumerate() {
            if i % 2 == 0 {
                Als::load_file(path).unwrap();
            } else {
                Popularity::load_file(path).unwrap();
            }
        }
    }
    assert_eq!(
        strays(
            dir.path(),
            &[
                "model.tmp",
                "model.als",
                "concurrent.als",
                "concurrent.pop",
                "concurrent.bin",
                "concurrent.json"
            ]
        ),
        Vec::<String>::new()
    );
}

#[test]
fn a_failed_save_leaves_no_temporary_file() {
    let data = planted();
    let mut popular = Popularity::new();
    popular.fit(&data.dataset).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The target is a directory that is not empty: the final rename fails.
    let target = dir.path().join("model.pop");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), b"x").unwrap();
    let e = popular
        .save_file(&target)
        .expect_err("cannot replace a directory");
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    assert_eq!(strays(dir.path(), &["model.pop"]), Vec::<String>::new());
    // A target in a directory that does not exist fails before writing anything.
    let e = popular
        .save_file(dir.path().join("missing").join("model.pop"))
        .expect_err("no such directory");
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    assert_eq!(strays(dir.path(), &["model.pop"]), Vec::<String>::new());
}
