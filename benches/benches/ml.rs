//! Criterion benchmarks of `lakehouse-ml`: fitting, top-k serving and online fold-in on
//! seeded synthetic data with planted preferences.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use lakehouse_ml::{Als, Dataset, Event, Id, ItemItem, Query, Recommender, Synthetic};

/// 2 000 users, 3 000 items, 60 000 interactions in 10 taste groups.
fn data() -> Dataset {
    Synthetic::new(2_000, 3_000, 60_000)
        .groups(10)
        .seed(5)
        .generate()
        .expect("valid synthetic parameters")
        .dataset
}

fn als() -> Als {
    Als::builder()
        .factors(32)
        .iterations(5)
        .seed(1)
        .build()
        .expect("valid ALS parameters")
}

fn fit(c: &mut Criterion) {
    let data = data();
    let mut g = c.benchmark_group("ml/fit");
    g.sample_size(10);
    g.bench_function("als_32f_5it_60k", |b| {
        b.iter(|| {
            let mut model = als();
            model.fit(black_box(&data)).expect("fit");
            model
        })
    });
    g.bench_function("item_item_bm25_60k", |b| {
        b.iter(|| {
            let mut model = ItemItem::bm25();
            model.fit(black_box(&data)).expect("fit");
            model
        })
    });
    g.finish();
}

fn recommend(c: &mut Criterion) {
    let data = data();
    let mut model = als();
    model.fit(&data).expect("fit");
    let mut item_item = ItemItem::bm25();
    item_item.fit(&data).expect("fit");
    let users: Vec<Id> = (1..=2_000i64).map(Id::from).collect();
    let q = Query::top(10);
    let mut g = c.benchmark_group("ml/recommend");
    let mut n = 0usize;
    g.bench_function("als_top10_3k_items", |b| {
        b.iter(|| {
            n = (n + 1) % users.len();
            model
                .recommend(black_box(&users[n]), &q)
                .expect("recommend")
        })
    });
    g.bench_function("item_item_top10", |b| {
        b.iter(|| {
            n = (n + 1) % users.len();
            item_item
                .recommend(black_box(&users[n]), &q)
                .expect("recommend")
        })
    });
    g.bench_function("als_recommend_many_2k_users", |b| {
        b.iter(|| model.recommend_many(black_box(&users), &q))
    });
    g.finish();
}

fn fold_in(c: &mut Criterion) {
    let data = data();
    let mut model = als();
    model.fit(&data).expect("fit");
    let mut g = c.benchmark_group("ml/fold_in");
    let mut n = 0i64;
    g.bench_function("als_one_event", |b| {
        b.iter_batched(
            || {
                n += 1;
                [Event::new(1 + n % 2_000, 1 + (n * 7919) % 3_000)]
            },
            |events| model.update(black_box(&events)).expect("update"),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, fit, recommend, fold_in);
criterion_main!(benches);
