//! Property tests: splits lose no interaction, recommendations keep their contract for
//! any data, and loading never panics.

use std::collections::{HashMap, HashSet};

use lakehouse_ml::{
    Als, Dataset, Event, Id, ItemItem, Persist, Popularity, Query, Recommender, read_movielens,
};
use proptest::prelude::*;

fn dataset(pairs: &[(u8, u8, u8)]) -> Dataset {
    let mut d = Dataset::new();
    for &(u, i, w) in pairs {
        d.push(
            i64::from(u),
            format!("item-{i}"),
            f32::from(w) / 4.0,
            i64::from(w),
        )
        .unwrap();
    }
    d
}

fn interactions() -> impl Strategy<Value = Vec<(u8, u8, u8)>> {
    prop::collection::vec((0u8..12, 0u8..20, 0u8..8), 1..120)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn splits_partition_the_distinct_pairs(pairs in interactions(), frac in 0.0f64..0.99, seed in any::<u64>()) {
        let d = dataset(&pairs);
        let distinct: HashSet<(u32, u32)> =
            d.interactions().iter().map(|x| (x.user, x.item)).collect();
        let total: f32 = d.interactions().iter().map(|x| x.weight).sum();
        for (train, test) in [d.split_random(frac, seed).unwrap(), d.split_by_time(frac).unwrap()] {
            let a: HashSet<(u32, u32)> = train.interactions().iter().map(|x| (x.user, x.item)).collect();
            let b: HashSet<(u32, u32)> = test.interactions().iter().map(|x| (x.user, x.item)).collect();
            prop_assert_eq!(a.len(), train.len());
            prop_assert_eq!(b.len(), test.len());
            prop_assert!(a.is_disjoint(&b));
            prop_assert_eq!(a.union(&b).copied().collect::<HashSet<_>>(), distinct.clone());
            prop_assert_eq!(test.len(), (distinct.len() as f64 * frac).round() as usize);
            let sum: f32 = train.interactions().iter().chain(test.interactions()).map(|x| x.weight).sum();
            prop_assert!((sum - total).abs() <= 1e-3 * total.max(1.0));
            prop_assert_eq!(train.users(), d.users());
            prop_assert_eq!(test.items(), d.items());
        }
    }

    #[test]
    fn recommendations_keep_their_contract(pairs in interactions(), k in 0usize..30, user in 0u8..14) {
        let d = dataset(&pairs);
        let mut models: Vec<Box<dyn Recommender>> = vec![
            Box::new(Als::builder().factors(4).iterations(3).build().unwrap()),
            Box::new(ItemItem::cosine()),
            Box::new(ItemItem::bm25()),
            Box::new(Popularity::new()),
        ];
        let user = Id::from(i64::from(user));
        let seen: HashSet<Id> = match d.users().get(&user) {
            Some(u) => d.interactions().iter().filter(|x| x.user == u)
                .map(|x| d.items().id(x.item).unwrap().clone()).collect(),
            None => HashSet::new(),
        };
        for model in &mut models {
            model.fit(&d).unwrap();
            let Ok(recs) = model.recommend(&user, &Query::top(k)) else {
                prop_assert!(seen.is_empty(), "{} refused a known user", model.name());
                continue;
            };
            prop_assert!(recs.len() <= k);
            prop_assert!(recs.len() <= d.num_items() - seen.len());
            let ids: HashSet<&Id> = recs.iter().map(|s| &s.item).collect();
            prop_assert_eq!(ids.len(), recs.len(), "{} duplicates", model.name());
            prop_assert!(recs.iter().all(|s| !seen.contains(&s.item) && s.score.is_finite()));
            prop_assert!(recs.windows(2).all(|w| w[0].score >= w[1].score));
            if model.name() != "item-item" {
                // Models that score every item fill the list.
                prop_assert_eq!(recs.len(), k.min(d.num_items() - seen.len()));
            }
        }
    }

    #[test]
    fn fold_in_keeps_each_users_most_recent_items(
        batches in prop::collection::vec(prop::collection::vec((0u8..6, 0u8..24, 1u8..4), 1..40), 1..5),
        limit in 1usize..8,
    ) {
        // Fitted on distinct pairs with distinct times, so recency is a strict order.
        let mut d = Dataset::new();
        let mut last: HashMap<(i64, String), i64> = HashMap::new();
        let mut tick = 0i64;
        for u in 0..4i64 {
            for i in (0..24).filter(|i| (i + u) % 3 == 0) {
                tick += 1;
                let item = format!("item-{i}");
                d.push(u, item.clone(), 1.0, tick).unwrap();
                last.insert((u, item), tick);
            }
        }
        let mut als = Als::builder().factors(4).iterations(3).history_per_user(limit).build().unwrap();
        als.fit(&d).unwrap();
        for batch in &batches {
            let events: Vec<Event> = batch
                .iter()
                .map(|&(u, i, w)| Event::new(i64::from(u), format!("item-{i}")).weight(f32::from(w)))
                .collect();
            als.update(&events).unwrap();
            for e in &events {
                tick += 1;
                let Id::Int(u) = e.user else { unreachable!("int user ids") };
                last.insert((u, e.item.to_string()), tick);
            }
            let all: HashSet<String> = als.items().unwrap().ids().iter().map(|i| i.to_string()).collect();
            for u in 0..6i64 {
                let mut touched: Vec<(i64, &String)> = last
                    .iter()
                    .filter(|((user, _), _)| *user == u)
                    .map(|((_, item), &t)| (t, item))
                    .collect();
                touched.sort_unstable_by(|a, b| b.cmp(a));
                let expected: HashSet<String> = touched.iter().take(limit).map(|(_, i)| (*i).clone()).collect();
                let user = Id::from(u);
                prop_assert_eq!(als.history_len(&user), expected.len());
                // What is never recommended, even asking for everything, is the kept
                // history and every item the user was fitted on, however small the bound.
                let fitted = (0..24).filter(|i| u < 4 && (i + u) % 3 == 0).map(|i| format!("item-{i}"));
                let excluded: HashSet<String> = expected.iter().cloned().chain(fitted).collect();
                if let Ok(recs) = als.recommend(&user, &Query::top(usize::MAX)) {
                    let offered: HashSet<String> = recs.iter().map(|s| s.item.to_string()).collect();
                    let kept: HashSet<String> = all.difference(&offered).cloned().collect();
                    prop_assert_eq!(kept, excluded);
                }
            }
        }
    }

    #[test]
    fn loading_arbitrary_bytes_never_panics(body in prop::collection::vec(any::<u8>(), 0..200), keep_header in any::<bool>()) {
        let mut bytes = Vec::new();
        if keep_header {
            let mut p = Popularity::new();
            p.fit(&dataset(&[(1, 1, 1)])).unwrap();
            p.save(&mut bytes).unwrap();
            bytes.truncate(10 + "popularity".len());
        }
        bytes.extend(body);
        prop_assert!(Popularity::load(bytes.as_slice()).is_err());
        prop_assert!(Als::load(bytes.as_slice()).is_err());
    }

    #[test]
    fn movielens_reader_never_panics(text in "[0-9 \t\n.a-z-]{0,200}") {
        if let Ok(d) = read_movielens(text.as_bytes()) {
            prop_assert!(d.interactions().iter().all(|x| x.weight >= 0.0 && x.weight.is_finite()));
        }
    }
}
