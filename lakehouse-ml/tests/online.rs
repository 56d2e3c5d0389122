//! Online updates: fold-in shows in the next recommendation without retraining.

use lakehouse_ml::{Als, Dataset, Event, Id, ItemItem, Popularity, Query, Recommender, evaluate};

use crate::common::{planted, small_als};

#[test]
fn als_fold_in_moves_a_user_to_their_new_taste_at_once() {
    let data = planted();
    let mut als = small_als(5);
    als.fit(&data.dataset).unwrap();
    // User 1 is in group 0; they now binge on group-2 items (ids 3, 8, 13, ...).
    let user = Id::from(1);
    let before = als.recommend(&user, &Query::top(10)).unwrap();
    let group = |s: &[lakehouse_ml::Scored], g: usize| {
        s.iter()
            .filter(|x| data.group_of(&x.item) == Some(g))
            .count()
    };
    assert!(group(&before, 0) >= 8, "before: {before:?}");
    let item_ids = data.dataset.items().ids().to_vec();
    let items_before: Vec<Vec<f32>> = item_ids
        .iter()
        .map(|i| als.item_factors(i).unwrap().to_vec())
        .collect();
    let other_before = als.recommend(&Id::from(2), &Query::top(10)).unwrap();

    let events: Vec<Event> = (0..40i64)
        .map(|k| Event::new(1, 3 + 5 * k).weight(3.0))
        .collect();
    als.update(&events).unwrap();
    let after = als.recommend(&user, &Query::top(10)).unwrap();
    assert!(group(&after, 2) >= 8, "after: {after:?}");
    for e in &events {
        assert!(
            after.iter().all(|s| s.item != e.item),
            "seen item recommended"
        );
    }
    // Fold-in changes only the user's vector: items and other users stay as they were.
    for (i, v) in item_ids.iter().zip(&items_before) {
        assert_eq!(als.item_factors(i).unwrap(), &v[..]);
    }
    assert_eq!(
        als.recommend(&Id::from(2), &Query::top(10)).unwrap(),
        other_before
    );
}

#[test]
fn als_fold_in_of_a_new_user_and_a_new_item() {
    let data = planted();
    let mut als = small_als(6);
    als.fit(&data.dataset).unwrap();
    let newcomer = Id::from("newcomer");
    assert!(als.recommend(&newcomer, &Query::top(5)).is_err());
    // Items of group 4: ids 5, 10, 15, ...
    let events: Vec<Event> = (1..=15i64).map(|k| Event::new("newcomer", 5 * k)).collect();
    als.update(&events).unwrap();
    let recs = als.recommend(&newcomer, &Query::top(10)).unwrap();
    assert_eq!(recs.len(), 10);
    let in_group = recs
        .iter()
        .filter(|s| data.group_of(&s.item) == Some(4))
        .count();
    assert!(in_group >= 8, "newcomer: {recs:?}");

    // A brand-new item bought by group-4 users gets a vector near group 4.
    let buyers: Vec<Event> = [5i64, 10, 15, 20, 25, 30, 35, 40]
        .iter()
        .map(|&u| Event::new(u, "fresh-item").weight(2.0))
        .collect();
    als.update(&buyers).unwrap();
    let fresh = Id::from("fresh-item");
    let near: Vec<_> = als.similar_items(&fresh, 10).unwrap();
    let same = near
        .iter()
        .filter(|s| data.group_of(&s.item) == Some(4))
        .count();
    assert!(same >= 7, "neighbours of the new item: {near:?}");
    // A group-4 user who has not seen it scores it above a group-0 user.
    let g4 = als.score(&Id::from(45), &fresh).unwrap();
    let g0 = als.score(&Id::from(46), &fresh).unwrap();
    assert!(g4 > g0, "group-4 user {g4} vs group-0 user {g0}");
}

/// Folds `stream` into `als` in batches of `batch` events, in the stream's order.
fn fold_in_all(als: &mut Als, stream: &Dataset, batch: usize) {
    let events: Vec<Event> = stream
        .interactions()
        .iter()
        .map(|x| {
            let user = stream.users().id(x.user).unwrap().clone();
            let item = stream.items().id(x.item).unwrap().clone();
            Event::new(user, item).weight(x.weight)
        })
        .collect();
    for chunk in events.chunks(batch) {
        als.update(chunk).unwrap();
    }
}

#[test]
fn als_cg_fold_in_ranks_as_well_as_the_exact_fold_in() {
    // Fitted on half of the data, the next third folded in batch by batch (a handful of
    // events per user and batch: the warm-started path), ranked on the rest.
    let data = planted();
    let (rest, test) = data.dataset.split_random(0.2, 11).unwrap();
    let (base, stream) = rest.split_random(0.4, 12).unwrap();
    let fold = |steps: usize| -> Als {
        let mut als = Als::builder()
            .factors(16)
            .iterations(8)
            .regularization(0.1)
            .seed(4)
            .fold_in_cg_steps(steps)
            .build()
            .unwrap();
        als.fit(&base).unwrap();
        fold_in_all(&mut als, &stream, 300);
        als
    };
    let (exact, cg) = (fold(0), fold(3));
    let (pe, pc) = (
        evaluate(&exact, &test, 10).unwrap().precision,
        evaluate(&cg, &test, 10).unwrap().precision,
    );
    assert!(pc >= pe - 0.01, "precision@10: CG {pc} vs exact {pe}");
    // Folding in helped at all: better than the model before it.
    let mut before = Als::builder()
        .factors(16)
        .iterations(8)
        .regularization(0.1)
        .seed(4)
        .build()
        .unwrap();
    before.fit(&base).unwrap();
    let pb = evaluate(&before, &test, 10).unwrap().precision;
    assert!(pc > pb, "precision@10: CG fold-in {pc} vs none {pb}");
    // And the vectors are close to the exact ones.
    let mut compared = 0;
    for user in exact.users().unwrap().ids() {
        let (Ok(a), Ok(b)) = (cg.user_factors(user), exact.user_factors(user)) else {
            assert!(
                cg.user_factors(user).is_err(),
                "user {user} known to one only"
            );
            continue;
        };
        compared += 1;
        let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
        let cos = dot(a, b) / (dot(a, a).sqrt() * dot(b, b).sqrt());
        assert!(cos > 0.99, "user {user}: cosine {cos}");
    }
    assert!(compared > 250, "{compared} users compared");
}

#[test]
fn item_item_and_popularity_updates_show_at_once() {
    let data = planted();
    let mut item_item = ItemItem::cosine();
    item_item.fit(&data.dataset).unwrap();
    item_item
        .update(&[Event::new("fan", 4), Event::new("fan", 9)])
        .unwrap();
    let recs = item_item
        .recommend(&Id::from("fan"), &Query::top(10))
        .unwrap();
    assert!(!recs.is_empty());
    let g3 = recs
        .iter()
        .filter(|s| data.group_of(&s.item) == Some(3))
        .count();
    assert!(g3 * 10 >= recs.len() * 7, "fan of group 3: {recs:?}");
    assert!(
        recs.iter()
            .all(|s| s.item != Id::from(4) && s.item != Id::from(9))
    );

    let mut popular = Popularity::new();
    popular.fit(&data.dataset).unwrap();
    let top = popular.top_items(&Query::top(1)).unwrap();
    let burst: Vec<Event> = (0..5_000).map(|u| Event::new(u, 400).weight(1.0)).collect();
    popular.update(&burst).unwrap();
    let now = popular.top_items(&Query::top(1)).unwrap();
    assert_ne!(top[0].item, Id::from(400));
    assert_eq!(now[0].item, Id::from(400));
}

#[test]
fn a_rejected_update_changes_nothing() {
    let data = planted();
    let mut als = small_als(7);
    als.fit(&data.dataset).unwrap();
    let user = Id::from(3);
    let before = als.recommend(&user, &Query::top(10)).unwrap();
    let bad = [
        Event::new(3, 1).weight(5.0),
        Event::new(3, 2).weight(f32::NAN),
    ];
    let e = als.update(&bad).unwrap_err();
    assert_eq!(e.kind(), lakehouse_ml::ErrorKind::InvalidInput);
    assert_eq!(als.recommend(&user, &Query::top(10)).unwrap(), before);
    let e = als.update(&[Event::new(3, 1).weight(-1.0)]).unwrap_err();
    assert_eq!(e.kind(), lakehouse_ml::ErrorKind::InvalidInput);
    assert_eq!(als.recommend(&user, &Query::top(10)).unwrap(), before);
}
