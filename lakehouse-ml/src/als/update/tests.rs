//! The two-phase fold-in against the sequential update it replaced, bounded history,
//! and updates prepared against a model that changed.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::Recommender;
use crate::data::Dataset;
use crate::linalg::solve_exact;

/// The sequential fold-in `Als::update` did before the two phases, kept as the
/// reference: every event into the (unbounded) history, then each new item and each
/// user solved in turn, in f64, straight into the model.
fn sequential_update(als: &mut Als, events: &[Event]) {
    let f = als.f();
    let mut history = als.history.take().unwrap();
    let mut users = BTreeSet::new();
    let mut new_items: BTreeMap<u32, Vec<(u32, f32)>> = BTreeMap::new();
    for e in events {
        let (u, i, _, new_item) = history.add(e).unwrap();
        users.insert(u);
        if new_item || new_items.contains_key(&i) || als.item_row(i).is_empty() {
            new_items.entry(i).or_default().push((u, e.weight));
        }
    }
    als.user_factors.resize(history.users.len() * f, 0.0);
    als.item_factors.resize(history.items.len() * f, 0.0);
    for (&i, item_users) in &new_items {
        let entries: Vec<(u32, f32)> = item_users
            .iter()
            .filter(|&&(u, _)| als.user_row(u).iter().any(|&v| v != 0.0))
            .map(|&(u, w)| (u, als.confidence(w)))
            .collect();
        let y = solve_exact(&als.user_gram, &als.user_factors, f, entries.into_iter()).unwrap();
        als.item_factors[i as usize * f..i as usize * f + f].copy_from_slice(&y);
    }
    for u in users {
        let entries: Vec<(u32, f32)> = history
            .row(u)
            .iter()
            .map(|&(i, w)| (i, als.confidence(w)))
            .collect();
        let x = solve_exact(&als.item_gram, &als.item_factors, f, entries.into_iter()).unwrap();
        als.user_factors[u as usize * f..u as usize * f + f].copy_from_slice(&x);
    }
    als.history = Some(history);
    als.refresh_norms();
}

fn tribes() -> Dataset {
    let mut d = Dataset::new();
    for u in 0..60i64 {
        let base = if u % 3 == 0 { 0 } else { 20 };
        for k in 0..14i64 {
            if (u + k) % 4 != 0 {
                d.push(u, base + k, 1.0 + (k % 3) as f32, u * 100 + k)
                    .unwrap();
            }
        }
    }
    d
}

/// Fitted on [`tribes`], with exact fold-in solves (the reference the tests compare
/// against).
fn fitted(history_per_user: usize) -> Als {
    let mut als = Als::builder()
        .factors(6)
        .iterations(6)
        .seed(3)
        .history_per_user(history_per_user)
        .fold_in_cg_steps(0)
        .build()
        .unwrap();
    als.fit(&tribes()).unwrap();
    als
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-4 * x.abs().max(y.abs()).max(1.0))
}

/// Existing users (some twice on one item), new users, and two new items, each touched
/// once by several users (the sequential update did not merge a pair's repeats on a new
/// item; the batch does, so the reference is only comparable without them).
fn batch() -> Vec<Event> {
    let mut events = Vec::new();
    for u in [1i64, 2, 5, 9, 12, 33] {
        events.push(Event::new(u, 21 + u % 5).weight(2.0));
        events.push(Event::new(u, 3).weight(1.0));
        events.push(Event::new(u, 21 + u % 5).weight(0.5));
    }
    for u in [3i64, 6, 9, 12] {
        events.push(Event::new(u, "new-a").weight(3.0));
    }
    for u in [1i64, 2, 4] {
        events.push(Event::new(u, "new-b"));
    }
    events.push(Event::new("stranger", 4).weight(5.0));
    events.push(Event::new("stranger", 7));
    events.push(Event::new("stranger", "new-a"));
    events
}

#[test]
fn two_phases_match_the_sequential_update() {
    let mut batched = fitted(1_000);
    let mut reference = batched.clone();
    let events = batch();
    let update = batched.prepare_update(&events).unwrap();
    assert_eq!(
        (update.events(), update.new_users(), update.new_items()),
        (events.len(), 1, 2)
    );
    batched.apply_update(update).unwrap();
    sequential_update(&mut reference, &events);

    let (b, r) = (batched.history().unwrap(), reference.history().unwrap());
    assert_eq!(b.users, r.users);
    assert_eq!(b.items, r.items);
    for u in 0..b.users.len() as u32 {
        assert_eq!(b.row(u), r.row(u), "history of user {u}");
        assert!(
            close(batched.user_row(u), reference.user_row(u)),
            "user {u}: {:?} vs {:?}",
            batched.user_row(u),
            reference.user_row(u)
        );
    }
    for i in 0..b.items.len() as u32 {
        assert!(
            close(batched.item_row(i), reference.item_row(i)),
            "item {i}"
        );
    }
    assert!(close(&batched.item_norms, &reference.item_norms));
    // The update shows at once: a new user is served, seen items are excluded.
    let recs = batched
        .recommend(&Id::from("stranger"), &crate::Query::top(5))
        .unwrap();
    assert_eq!(recs.len(), 5);
    assert!(
        recs.iter()
            .all(|s| s.item != Id::from(4) && s.item != Id::from(7))
    );
}

#[test]
fn update_is_the_two_phases() {
    let mut a = fitted(1_000);
    let mut b = a.clone();
    let events = batch();
    a.update(&events).unwrap();
    let update = b.prepare_update(&events).unwrap();
    b.apply_update(update).unwrap();
    assert_eq!(a.user_factors, b.user_factors);
    assert_eq!(a.item_factors, b.item_factors);
    assert_eq!(a.history, b.history);
}

#[test]
fn history_keeps_the_most_recent_items_per_user() {
    const LIMIT: usize = 4;
    let mut als = fitted(LIMIT);
    let h = als.history().unwrap();
    assert!((0..h.users.len() as u32).all(|u| h.row(u).len() <= LIMIT));
    // User 1 trained on items 20, 21, 22, 24, 25, 26, 28, 29, 30, 32, 33 at rising
    // times: the four latest are kept.
    let items_of = |als: &Als, user: i64| -> BTreeSet<String> {
        let h = als.history().unwrap();
        let u = h.users.get(&Id::from(user)).unwrap();
        h.row(u)
            .iter()
            .map(|&(i, _)| h.items.id(i).unwrap().to_string())
            .collect()
    };
    let set =
        |items: &[&str]| -> BTreeSet<String> { items.iter().map(|s| s.to_string()).collect() };
    assert_eq!(items_of(&als, 1), set(&["29", "30", "32", "33"]));
    // Batches push older items out, in order of last touch; a dropped item that comes
    // back starts from its new weight.
    als.update(&[Event::new(1, 2), Event::new(1, 5)]).unwrap();
    assert_eq!(items_of(&als, 1), set(&["2", "5", "32", "33"]));
    als.update(&[Event::new(1, 30), Event::new(1, "fresh")])
        .unwrap();
    assert_eq!(items_of(&als, 1), set(&["2", "5", "30", "fresh"]));
    // Within one batch too: items 0..=13 in turn, then 0..=3 again.
    let mut many: Vec<Event> = (100..130i64).map(|i| Event::new(1, i % 14)).collect();
    many.push(Event::new(7, 3));
    als.update(&many).unwrap();
    assert_eq!(items_of(&als, 1), set(&["0", "1", "2", "3"]));
    let h = als.history().unwrap();
    assert!((0..h.users.len() as u32).all(|u| h.row(u).len() <= LIMIT));
    h.check().unwrap();
    // The vector is the solve over exactly the kept items.
    let u = h.users.get(&Id::from(1)).unwrap();
    let entries: Vec<(u32, f32)> = h
        .row(u)
        .iter()
        .map(|&(i, w)| (i, als.confidence(w)))
        .collect();
    let x = solve_exact(
        &als.item_gram,
        &als.item_factors,
        als.f(),
        entries.into_iter(),
    )
    .unwrap();
    assert!(close(als.user_row(u), &x));
}

#[test]
fn an_update_prepared_on_a_changed_model_is_refused() {
    let mut als = fitted(1_000);
    let first = als.prepare_update(&[Event::new(1, 3)]).unwrap();
    let second = als.prepare_update(&[Event::new(2, 4)]).unwrap();
    // A clone has the same content: the update applies there too.
    let mut copy = als.clone();
    copy.apply_update(first.clone()).unwrap();
    als.apply_update(first).unwrap();
    assert_eq!(copy.user_factors, als.user_factors);
    // `second` was prepared before `first` was applied.
    let before = (als.user_factors.clone(), als.history.clone());
    let e = als.apply_update(second).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert_eq!((als.user_factors.clone(), als.history.clone()), before);
    // Prepared again, it applies.
    let again = als.prepare_update(&[Event::new(2, 4)]).unwrap();
    als.apply_update(again).unwrap();
    assert!(
        als.history()
            .unwrap()
            .seen(2, als.history().unwrap().items.get(&Id::from(4)).unwrap())
    );
    // A refit and an added item change the model too.
    let stale = als.prepare_update(&[Event::new(3, 5)]).unwrap();
    als.fit(&tribes()).unwrap();
    assert_eq!(
        als.apply_update(stale).unwrap_err().kind(),
        ErrorKind::Conflict
    );
    let stale = als.prepare_update(&[Event::new(3, 5)]).unwrap();
    let mut catalog = crate::ItemAttributes::new();
    catalog.insert(Id::from(5), &["blue"]);
    als.add_item_from_attributes("blue-thing", &["blue"], &catalog)
        .unwrap();
    assert_eq!(
        als.apply_update(stale).unwrap_err().kind(),
        ErrorKind::Conflict
    );
    // Another model, even one trained alike, is never mistaken for this one.
    let other = fitted(1_000);
    let foreign = other.prepare_update(&[Event::new(3, 5)]).unwrap();
    assert_eq!(
        als.apply_update(foreign).unwrap_err().kind(),
        ErrorKind::Conflict
    );
}

#[test]
fn bad_events_prepare_nothing() {
    let als = fitted(1_000);
    let e = als
        .prepare_update(&[Event::new(1, 3), Event::new(1, 4).weight(f32::NAN)])
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let unfitted = Als::builder().build().unwrap();
    assert_eq!(
        unfitted
            .prepare_update(&[Event::new(1, 3)])
            .unwrap_err()
            .kind(),
        ErrorKind::NotFitted
    );
    let mut als = als;
    let empty = als.prepare_update(&[]).unwrap();
    assert!(empty.is_empty());
    let before = als.user_factors.clone();
    als.apply_update(empty).unwrap();
    assert_eq!(als.user_factors, before);
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    dot(a, b) / (dot(a, a).sqrt() * dot(b, b).sqrt())
}

/// `|a - b| / |b|`.
fn relative_error(a: &[f32], b: &[f32]) -> f32 {
    let d: Vec<f32> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    (dot(&d, &d) / dot(b, b)).sqrt()
}

#[test]
fn cg_fold_in_stays_close_to_the_exact_solve() {
    let mut exact = fitted(1_000);
    let mut cg = exact.clone();
    cg.params.fold_in_cg_steps = 3;
    let (mut worst_cos, mut worst_err, mut differ) = (1f32, 0f32, 0usize);
    for round in 0..6i64 {
        // One new item for every user a round (a tenth or less of their row): the
        // warm-started path.
        let mut events: Vec<Event> = (0..60i64)
            .map(|u| {
                let item = (u + 5 * round) % 14 + if (u + round) % 2 == 0 { 0 } else { 20 };
                Event::new(u, item).weight(1.0 + (u % 3) as f32)
            })
            .collect();
        // A new user is always solved exactly.
        events.push(Event::new(format!("new-{round}"), 3).weight(2.0));
        exact.update(&events).unwrap();
        cg.update(&events).unwrap();
        let h = cg.history().unwrap();
        assert_eq!(
            h,
            exact.history().unwrap(),
            "histories do not depend on the solver"
        );
        for u in 0..h.users.len() as u32 {
            let (a, b) = (cg.user_row(u), exact.user_row(u));
            worst_cos = worst_cos.min(cosine(a, b));
            worst_err = worst_err.max(relative_error(a, b));
            differ += usize::from(a != b);
        }
        let new = h.users.get(&Id::from(format!("new-{round}"))).unwrap();
        assert_eq!(cg.user_row(new), exact.user_row(new), "a new user, exactly");
    }
    assert!(differ > 0, "the conjugate-gradient path never ran");
    assert!(worst_cos > 0.99, "cosine similarity {worst_cos}");
    assert!(worst_err < 0.15, "relative error {worst_err}");
    // A batch touching a quarter of a user's row or more is solved exactly.
    let heavy: Vec<Event> = (0..8i64).map(|k| Event::new(7, 20 + k)).collect();
    exact.update(&heavy).unwrap();
    cg.update(&heavy).unwrap();
    let u = cg.history().unwrap().users.get(&Id::from(7)).unwrap();
    assert!(close(cg.user_row(u), exact.user_row(u)));
}
