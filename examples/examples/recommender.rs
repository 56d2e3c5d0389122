//! Train and evaluate recommenders on synthetic shoppers with planted tastes: ALS,
//! item-to-item collaborative filtering and popularity compared on a random split
//! (precision, recall, NDCG, MAP at 10 and catalogue coverage); recommendations for a
//! user; new interactions folded in online and the recommendations moving with them;
//! cold start for a user the model has never seen; the model saved, loaded and checked
//! to recommend the same; and unknown ids answered with typed errors.
//!
//! ```text
//! cargo run -p lakehouse-examples --example recommender
//! ```
//!
//! The last line is `ok: recommender ...` when every check passed; otherwise the example
//! exits non-zero naming the failed check.

use std::path::PathBuf;
use std::time::Instant;

use lakehouse_ml::{
    Als, ColdStart, ErrorKind, Event, Id, ItemItem, Metrics, Persist, Popularity, Query,
    Recommender, Scored, Synthetic, SyntheticData, evaluate,
};

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

const GROUPS: usize = 5;
const K: usize = 10;

/// How many of `recs` are items of planted group `group`.
fn in_group(data: &SyntheticData, recs: &[Scored], group: usize) -> usize {
    recs.iter()
        .filter(|s| data.group_of(&s.item) == Some(group))
        .count()
}

/// Share of the top-10 recommendations of every user of `train` that fall in the user's
/// own planted taste group (a model blind to taste lands about 1 in 5).
fn in_group_share(
    model: &dyn Recommender,
    data: &SyntheticData,
    train: &lakehouse_ml::Dataset,
) -> BoxResult<f64> {
    let users: Vec<Id> = train.users().ids().to_vec();
    let (mut hits, mut total) = (0usize, 0usize);
    for (user, recs) in users
        .iter()
        .zip(model.recommend_many(&users, &Query::top(K)))
    {
        let group = data.group_of(user).ok_or("a synthetic user has no group")?;
        let recs = recs?;
        total += recs.len();
        hits += in_group(data, &recs, group);
    }
    if total == 0 {
        return Err("no recommendation was made".into());
    }
    Ok(hits as f64 / total as f64)
}

fn show(recs: &[Scored], data: &SyntheticData) -> String {
    recs.iter()
        .map(|s| match data.group_of(&s.item) {
            Some(g) => format!("{}(g{g})", s.item),
            None => s.item.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn new_als() -> BoxResult<Als> {
    Ok(Als::builder()
        .factors(16)
        .iterations(8)
        .regularization(0.1)
        .seed(1)
        .build()?)
}

/// Removes the saved model when dropped, also on an early error.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn main() -> BoxResult<()> {
    let started = Instant::now();

    // 1. Synthetic interactions: user u and item i belong to taste group (id - 1) % 5,
    //    and 85% of a user's picks are items of their own group.
    let data = Synthetic::new(400, 500, 16_000)
        .groups(GROUPS)
        .affinity(0.85)
        .seed(7)
        .generate()?;
    let (train, test) = data.dataset.split_random(0.2, 11)?;
    println!(
        "{} interactions of {} users on {} items in {GROUPS} taste groups; train {}, test {}",
        data.dataset.len(),
        data.dataset.num_users(),
        data.dataset.num_items(),
        train.len(),
        test.len()
    );

    // 2. Train three models and compare them on the held-out interactions.
    let mut als = new_als()?;
    let mut item_item = ItemItem::cosine();
    let mut popularity = Popularity::new();
    let mut rows: Vec<(&str, Metrics, f64, f64)> = Vec::new();
    for (name, model) in [
        ("als", &mut als as &mut dyn Recommender),
        ("item-item", &mut item_item),
        ("popularity", &mut popularity),
    ] {
        let t = Instant::now();
        model.fit(&train)?;
        let fit_ms = t.elapsed().as_secs_f64() * 1e3;
        let share = in_group_share(model, &data, &train)?;
        rows.push((name, evaluate(model, &test, K)?, share, fit_ms));
    }
    println!(
        "\n{:<11} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>6} {:>9}",
        "model", "prec@10", "recall", "ndcg", "map", "coverage", "in-group", "users", "fit ms"
    );
    for (name, m, share, fit_ms) in &rows {
        println!(
            "{name:<11} {:>8.4} {:>8.4} {:>8.4} {:>8.4} {:>9.3} {share:>9.3} {:>6} {fit_ms:>9.1}",
            m.precision, m.recall, m.ndcg, m.map, m.coverage, m.users
        );
    }
    println!("(in-group: share of every user's top {K} in their own planted taste group)");
    let metric = |name: &str| -> BoxResult<(Metrics, f64)> {
        rows.iter()
            .find(|r| r.0 == name)
            .map(|r| (r.1, r.2))
            .ok_or_else(|| format!("no metrics for {name}").into())
    };
    let ((m_als, share_als), (m_cf, share_cf), (m_pop, share_pop)) =
        (metric("als")?, metric("item-item")?, metric("popularity")?);
    if share_als < 0.6 || share_cf < 0.6 || share_pop > 0.4 {
        return Err(format!(
            "planted tastes not recovered: in-group share als {share_als:.3}, item-item {share_cf:.3}, popularity {share_pop:.3}"
        )
        .into());
    }
    for (name, m) in [("als", m_als), ("item-item", m_cf)] {
        if m.precision <= m_pop.precision || m.ndcg <= m_pop.ndcg {
            return Err(format!(
                "{name} should beat popularity on planted tastes: precision {:.4} vs {:.4}, ndcg {:.4} vs {:.4}",
                m.precision, m_pop.precision, m.ndcg, m_pop.ndcg
            )
            .into());
        }
        if m.coverage <= m_pop.coverage {
            return Err(
                format!("{name} should cover more of the catalogue than popularity").into(),
            );
        }
    }

    // 3. Recommendations for user 1 (taste group 0).
    let user = Id::from(1);
    let group = data.group_of(&user).ok_or("user 1 has no planted group")?;
    let before = als.recommend(&user, &Query::top(K))?;
    println!(
        "\nuser {user} (group {group}), ALS top {K}: {}",
        show(&before, &data)
    );
    let cf = item_item.recommend(&user, &Query::top(K))?;
    println!(
        "user {user} (group {group}), item-item top {K}: {}",
        show(&cf, &data)
    );

    // 4. Online fold-in: user 1 now buys group-2 items; no retraining.
    let new_taste = 2;
    let events: Vec<Event> = (0..30i64)
        .map(|k| Event::new(1, 3 + GROUPS as i64 * k).weight(3.0))
        .collect();
    let t = Instant::now();
    als.update(&events)?;
    item_item.update(&events)?;
    let fold_us = t.elapsed().as_micros();
    let after = als.recommend(&user, &Query::top(K))?;
    println!(
        "after folding in {} purchases of group-{new_taste} items ({fold_us} us): {}",
        events.len(),
        show(&after, &data)
    );
    println!(
        "group {group} items in the top {K}: {} -> {}; group {new_taste}: {} -> {}",
        in_group(&data, &before, group),
        in_group(&data, &after, group),
        in_group(&data, &before, new_taste),
        in_group(&data, &after, new_taste)
    );
    if in_group(&data, &after, new_taste) <= in_group(&data, &before, new_taste)
        || in_group(&data, &after, new_taste) < 5
    {
        return Err("the fold-in did not move user 1 towards their new taste".into());
    }
    if after
        .iter()
        .any(|s| events.iter().any(|e| e.item == s.item))
    {
        return Err("an item the user just bought was recommended".into());
    }

    // 5. Cold start: a visitor the model has never seen gets the popular items. Any
    //    model can be wrapped; item-item is the quickest to fit again here.
    let visitor = Id::from("visitor-42");
    match als.recommend(&visitor, &Query::top(K)) {
        Err(e) if e.kind() == ErrorKind::UnknownUser => {
            println!("\nALS alone for {visitor}: {:?}: {e}", e.kind());
        }
        other => return Err(format!("expected UnknownUser, got {other:?}").into()),
    }
    let mut cold = ColdStart::new(ItemItem::cosine());
    cold.fit(&train)?;
    let fallback = cold.recommend(&visitor, &Query::top(K))?;
    let popular = popularity.recommend(&visitor, &Query::top(K))?;
    println!("cold start for {visitor}: {}", show(&fallback, &data));
    let ids = |v: &[Scored]| v.iter().map(|s| s.item.clone()).collect::<Vec<_>>();
    if ids(&fallback) != ids(&popular) {
        return Err("cold start should answer an unknown user with the popular items".into());
    }

    // 6. Save and load the (folded-in) ALS model: it recommends exactly the same.
    let file = TempFile(
        std::env::temp_dir().join(format!("lakehouse-recommender-{}.lhml", std::process::id())),
    );
    als.save(std::fs::File::create(&file.0)?)?;
    let bytes = std::fs::metadata(&file.0)?.len();
    let loaded = Als::load(std::fs::File::open(&file.0)?)?;
    let mut compared = 0;
    for u in (1..=50i64).map(Id::from) {
        let (a, b) = (
            als.recommend(&u, &Query::top(K))?,
            loaded.recommend(&u, &Query::top(K))?,
        );
        if a != b {
            return Err(format!("user {u}: the loaded model recommends differently").into());
        }
        compared += 1;
    }
    println!(
        "\nsaved ALS to {} ({bytes} bytes), loaded it back: same top {K} for {compared} users, including the folded-in user",
        file.0.display()
    );

    // 7. Unknown ids and bad input are typed errors, not panics.
    let unknown_item = match loaded.similar_items(&Id::from("no-such-sku"), 5) {
        Err(e) => e,
        Ok(v) => return Err(format!("similar items of an unknown item: {v:?}").into()),
    };
    println!(
        "similar_items(no-such-sku): {:?}: {unknown_item}",
        unknown_item.kind()
    );
    if unknown_item.kind() != ErrorKind::UnknownItem {
        return Err(format!("expected UnknownItem, got {:?}", unknown_item.kind()).into());
    }
    let unknown_user = match loaded.recommend(&Id::from(999_999), &Query::top(K)) {
        Err(e) => e,
        Ok(v) => return Err(format!("recommendations for an unknown user: {v:?}").into()),
    };
    println!(
        "recommend(999999): {:?}: {unknown_user}",
        unknown_user.kind()
    );
    if unknown_user.kind() != ErrorKind::UnknownUser {
        return Err(format!("expected UnknownUser, got {:?}", unknown_user.kind()).into());
    }
    let mut copy = loaded;
    let bad = copy.update(&[Event::new(1, 2).weight(f32::NAN)]);
    match bad {
        Err(e) if e.kind() == ErrorKind::InvalidInput => {
            println!("update with a NaN weight: {:?}: {e}", e.kind());
        }
        other => return Err(format!("expected InvalidInput, got {other:?}").into()),
    }

    println!(
        "\nok: recommender als precision@10 {:.3}, item-item {:.3}, popularity {:.3}; fold-in moved user 1 to group {new_taste}; cold start, save/load and typed errors checked ({:.1?})",
        m_als.precision,
        m_cf.precision,
        m_pop.precision,
        started.elapsed()
    );
    Ok(())
}
