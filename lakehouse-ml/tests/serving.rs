//! Serving paths: the HNSW index against the exact scan, batch against single.

use lakehouse_ml::{
    Als, AlsParams, HnswParams, Id, ItemItem, Popularity, Query, Recommender, Scored,
};

use crate::common::{planted, small_als};

/// Deterministic pseudo-random factors in [-1, 1).
fn factors(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn random_model(users: usize, items: usize, f: usize) -> Als {
    let params = AlsParams {
        factors: f,
        ..AlsParams::default()
    };
    Als::from_factors(
        params,
        (0..users as i64).map(Id::from).collect(),
        factors(users * f, 1),
        (0..items as i64).map(Id::from).collect(),
        factors(items * f, 2),
    )
    .unwrap()
}

#[test]
fn hnsw_recall_against_the_exact_scan() {
    let mut als = random_model(100, 6_000, 16);
    let users: Vec<Id> = (0..100i64).map(Id::from).collect();
    let q = Query::top(10);
    let exact: Vec<Vec<Scored>> = users
        .iter()
        .map(|u| als.recommend(u, &q).unwrap())
        .collect();
    als.build_index(HnswParams::default()).unwrap();
    assert!(als.has_index());
    let (mut hits, mut total) = (0usize, 0usize);
    for (u, truth) in users.iter().zip(&exact) {
        let approx = als.recommend(u, &q).unwrap();
        assert_eq!(approx.len(), 10);
        assert_eq!(&als.recommend_exact(u, &q).unwrap(), truth);
        // Scores are the true dot products, best first.
        for w in approx.windows(2) {
            assert!(w[0].score >= w[1].score);
        }
        for s in &approx {
            let true_score = als.score(u, &s.item).unwrap();
            assert!((s.score - true_score).abs() <= 1e-4 * true_score.abs().max(1.0));
        }
        total += truth.len();
        hits += approx
            .iter()
            .filter(|a| truth.iter().any(|t| t.item == a.item))
            .count();
    }
    let recall = hits as f64 / total as f64;
    assert!(recall >= 0.9, "HNSW recall@10 {recall}");
    als.drop_index();
    assert!(!als.has_index());
    assert_eq!(als.recommend(&users[0], &q).unwrap(), exact[0]);
}

#[test]
fn a_wider_index_search_finds_more_of_the_exact_top_k() {
    let mut als = random_model(60, 10_000, 16);
    let users: Vec<Id> = (0..60i64).map(Id::from).collect();
    let q = Query::top(10);
    let exact: Vec<Vec<Scored>> = users
        .iter()
        .map(|u| als.recommend(u, &q).unwrap())
        .collect();
    let err = als.set_index_ef_search(50).unwrap_err();
    assert_eq!(err.kind(), lakehouse_ml::ErrorKind::NotFitted);
    let narrow = HnswParams {
        m: 4,
        ef_construction: 16,
        ef_search: 10,
        ..HnswParams::default()
    };
    als.build_index(narrow).unwrap();
    let recall = |als: &Als| {
        let mut hits = 0usize;
        for (u, truth) in users.iter().zip(&exact) {
            let approx = als.recommend(u, &q).unwrap();
            hits += approx
                .iter()
                .filter(|a| truth.iter().any(|t| t.item == a.item))
                .count();
        }
        hits as f64 / (users.len() * 10) as f64
    };
    let low = recall(&als);
    assert_eq!(
        als.set_index_ef_search(0).unwrap_err().kind(),
        lakehouse_ml::ErrorKind::InvalidInput
    );
    als.set_index_ef_search(2_000).unwrap();
    let high = recall(&als);
    assert!(high > low, "recall {low} at ef 10, {high} at ef 2000");
    assert!(high >= 0.9, "recall {high} at ef 2000");
}

#[test]
fn hnsw_respects_seen_items_and_filters() {
    let data = planted();
    // A history bound far below the users' item counts: exclusion must still cover
    // every fitted item, and the index search must fetch enough candidates for it.
    let mut als = Als::builder()
        .factors(16)
        .iterations(8)
        .regularization(0.1)
        .seed(1)
        .history_per_user(4)
        .build()
        .unwrap();
    als.fit(&data.dataset).unwrap();
    als.build_index(HnswParams::default()).unwrap();
    let even = |id: &Id| matches!(id, Id::Int(v) if v % 2 == 0);
    for u in 1..=30i64 {
        let user = Id::from(u);
        let seen = crate::common::items_of(&data.dataset, &user);
        let recs = als.recommend(&user, &Query::top(10).filter(&even)).unwrap();
        assert!(!recs.is_empty());
        for s in &recs {
            assert!(even(&s.item), "filter ignored: {s:?}");
            assert!(!seen.contains(&s.item), "seen item recommended: {s:?}");
        }
    }
}

#[test]
fn recommend_many_equals_recommend() {
    let data = planted();
    let mut als = small_als(2);
    als.fit(&data.dataset).unwrap();
    let mut item_item = ItemItem::bm25();
    item_item.fit(&data.dataset).unwrap();
    let mut popular = Popularity::new();
    popular.fit(&data.dataset).unwrap();
    let mut indexed = als.clone();
    indexed.build_index(HnswParams::default()).unwrap();

    let mut users: Vec<Id> = (1..=300i64).map(Id::from).collect();
    users.insert(17, Id::from("nobody"));
    users.push(Id::from(-5));
    let odd = |id: &Id| matches!(id, Id::Int(v) if v % 2 == 1);
    for q in [
        Query::top(10),
        Query::top(3).include_seen(),
        Query::top(7).filter(&odd),
    ] {
        for model in [&als as &dyn Recommender, &item_item, &popular, &indexed] {
            let many = model.recommend_many(&users, &q);
            assert_eq!(many.len(), users.len());
            for (u, got) in users.iter().zip(many) {
                match (model.recommend(u, &q), got) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b, "{} user {u}", model.name()),
                    (Err(a), Err(b)) => assert_eq!(a.kind(), b.kind()),
                    (a, b) => panic!("{} user {u}: {a:?} vs {b:?}", model.name()),
                }
            }
        }
    }
}

#[test]
fn k_larger_than_the_catalogue_returns_every_unseen_item_once() {
    let data = planted();
    let mut als = small_als(3);
    als.fit(&data.dataset).unwrap();
    let mut item_item = ItemItem::cosine();
    item_item.fit(&data.dataset).unwrap();
    let mut popular = Popularity::new();
    popular.fit(&data.dataset).unwrap();
    let user = Id::from(1);
    let seen = crate::common::items_of(&data.dataset, &user);
    let n_items = data.dataset.num_items();
    let unseen = n_items - seen.len();
    for k in [401, 10_000, usize::MAX] {
        for model in [&als as &dyn Recommender, &popular] {
            let recs = model.recommend(&user, &Query::top(k)).unwrap();
            assert_eq!(recs.len(), unseen, "{} k={k}", model.name());
            let mut ids: Vec<&Id> = recs.iter().map(|s| &s.item).collect();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), unseen);
            assert!(recs.windows(2).all(|w| w[0].score >= w[1].score));
        }
        // Item-item scores only items that co-occur with the user's history.
        let recs = item_item.recommend(&user, &Query::top(k)).unwrap();
        assert!(!recs.is_empty() && recs.len() <= unseen);
        let with_seen = als.recommend(&user, &Query::top(k).include_seen()).unwrap();
        assert_eq!(with_seen.len(), n_items);
        assert_eq!(
            als.similar_items(&Id::from(1), k).unwrap().len(),
            n_items - 1
        );
    }
    let mut indexed = als.clone();
    indexed.build_index(HnswParams::default()).unwrap();
    let recs = indexed.recommend(&user, &Query::top(usize::MAX)).unwrap();
    assert!(!recs.is_empty() && recs.len() <= unseen);
    assert!(als.recommend(&user, &Query::top(0)).unwrap().is_empty());
}
