//! Cold start: unknown users and items without interactions.

use std::time::Duration;

use lakehouse_ml::{
    ColdStart, ErrorKind, Id, ItemAttributes, Popularity, Query, Recommender, SegmentParams,
    Segments,
};

use crate::common::{planted, small_als};

#[test]
fn unknown_users_get_the_popular_items() {
    let data = planted();
    let mut model = ColdStart::new(small_als(1));
    model.fit(&data.dataset).unwrap();
    let mut popular = Popularity::new();
    popular.fit(&data.dataset).unwrap();
    let stranger = Id::from("stranger");
    assert_eq!(
        model
            .model()
            .recommend(&stranger, &Query::top(5))
            .unwrap_err()
            .kind(),
        ErrorKind::UnknownUser
    );
    let got = model.recommend(&stranger, &Query::top(5)).unwrap();
    assert_eq!(got, popular.top_items(&Query::top(5)).unwrap());
    // Known users still get the model's own, personalised list.
    let known = Id::from(1);
    assert_eq!(
        model.recommend(&known, &Query::top(5)).unwrap(),
        model.model().recommend(&known, &Query::top(5)).unwrap()
    );

    let mut trending = ColdStart::new(small_als(1))
        .with_popularity(Popularity::trending(Duration::from_secs(3600)).unwrap());
    trending.fit(&data.dataset).unwrap();
    assert_eq!(
        trending.recommend(&stranger, &Query::top(5)).unwrap().len(),
        5
    );
}

#[test]
fn unknown_users_with_features_get_their_segments_favourites() {
    let data = planted();
    let mut als = small_als(2);
    als.fit(&data.dataset).unwrap();
    let params = SegmentParams {
        clusters: 5,
        ..SegmentParams::default()
    };
    let segments = Segments::fit_on_als(&als, &data.dataset, params).unwrap();
    assert_eq!(segments.len(), 5);
    // k-means on ALS vectors finds the planted groups: users of one group share a segment.
    for g in 0..5i64 {
        let seg = segments.segment_of(&Id::from(g + 1)).unwrap();
        let agree = (0..40i64)
            .filter(|k| segments.segment_of(&Id::from(g + 1 + 5 * k)) == Some(seg))
            .count();
        assert!(agree >= 36, "group {g}: {agree}/40 users in segment {seg}");
    }

    let model = ColdStart::new(als.clone()).with_segments(segments.clone());
    let mut model = model;
    model.fit(&data.dataset).unwrap();
    // A newcomer whose features look like user 3's (group 2) gets group-2 favourites.
    let features: Vec<f64> = als
        .user_factors(&Id::from(3))
        .unwrap()
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    let seg = segments.assign(&features).unwrap();
    assert_eq!(Some(seg), segments.segment_of(&Id::from(3)));
    let recs = model
        .recommend_with_features(&Id::from("new"), &features, &Query::top(10))
        .unwrap();
    assert_eq!(
        recs,
        segments.recommend_segment(seg, &Query::top(10)).unwrap()
    );
    let g2 = recs
        .iter()
        .filter(|s| data.group_of(&s.item) == Some(2))
        .count();
    assert!(g2 >= 8, "segment favourites: {recs:?}");
    assert_eq!(
        segments.assign(&[1.0]).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        segments
            .assign(&vec![f64::NAN; features.len()])
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
}

#[test]
fn new_items_are_placed_by_their_attributes() {
    let data = planted();
    let mut als = small_als(3);
    als.fit(&data.dataset).unwrap();
    let mut catalog = ItemAttributes::new();
    for i in 1..=400i64 {
        let group = data.group_of(&Id::from(i)).unwrap();
        catalog.insert(i, &[format!("genre-{group}")]);
    }
    als.add_item_from_attributes("new-release", &["genre-1"], &catalog)
        .unwrap();
    let item = Id::from("new-release");
    // Users of group 1 (ids 2, 7, 12, ...) like it more than users of other groups.
    let mean = |g: i64| {
        let scores: Vec<f32> = (0..30i64)
            .map(|k| als.score(&Id::from(g + 1 + 5 * k), &item).unwrap())
            .collect();
        scores.iter().sum::<f32>() / scores.len() as f32
    };
    let liked = mean(1);
    for g in [0, 2, 3, 4] {
        assert!(
            liked > 2.0 * mean(g).max(0.0),
            "group 1 {liked} vs group {g} {}",
            mean(g)
        );
    }
    // It can be recommended at once to a group-1 user.
    let recs = als.recommend(&Id::from(2), &Query::top(400)).unwrap();
    let rank = recs.iter().position(|s| s.item == item).unwrap();
    assert!(rank < recs.len() / 4, "rank {rank} of {}", recs.len());

    let e = als
        .add_item_from_attributes("orphan", &["no-such-genre"], &catalog)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = als
        .add_item_from_attributes("new-release", &["genre-1"], &catalog)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}
