//! The Redis tier. Tests that need a server run only when `LAKEHOUSE_REDIS_URL` is set
//! (CI starts `redis-server` on loopback); the others run everywhere.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lakehouse_cache::{CacheTier, ErrorKind, RedisCache};
use lakehouse_core::ManualClock;

fn server() -> Option<String> {
    let url = std::env::var("LAKEHOUSE_REDIS_URL").ok();
    if url.is_none() {
        eprintln!("LAKEHOUSE_REDIS_URL is not set: skipping a test that needs a Redis server");
    }
    url
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}:{}:{}:",
        std::process::id(),
        lakehouse_core::Clock::now_micros(&lakehouse_core::SystemClock)
    )
}

#[test]
fn a_dead_server_degrades_to_the_near_cache() {
    let clock = ManualClock::at_millis(0);
    // Port 1 on loopback: connections are refused at once.
    let cache = RedisCache::builder("redis://127.0.0.1:1/")
        .near_ttl(Duration::from_secs(60))
        .retry_after(Duration::from_secs(5))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let err = cache
        .insert("a", Bytes::from_static(b"1"), None)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(
        cache.get("a").unwrap(),
        Some(Bytes::from_static(b"1")),
        "near still serves"
    );
    assert_eq!(
        cache.get("b").unwrap(),
        None,
        "a near miss with Redis down is a miss"
    );
    assert_eq!(
        cache.invalidate("a").unwrap_err().kind(),
        ErrorKind::Unavailable
    );
    assert_eq!(cache.get("a").unwrap(), None);
    let errors = cache.stats().backend_errors;
    assert!(
        errors >= 3,
        "every failed or skipped call is counted: {errors}"
    );
    assert_eq!(
        cache.top_k("x").record("k", 1.0).unwrap_err().kind(),
        ErrorKind::Unavailable
    );
}

#[test]
fn bad_urls_are_configuration_errors() {
    let err = RedisCache::builder("not a url").build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
}

#[test]
fn round_trips_through_redis_with_ttl_and_pipelined_reads() {
    let Some(url) = server() else { return };
    let prefix = unique("rt");
    let writer = RedisCache::builder(&url)
        .key_prefix(prefix.clone())
        .build()
        .unwrap();
    let reader = RedisCache::builder(&url)
        .key_prefix(prefix.clone())
        .build()
        .unwrap();
    writer
        .insert("k1", Bytes::from_static(b"v1"), None)
        .unwrap();
    writer
        .insert(
            "k2",
            Bytes::from_static(b"v2"),
            Some(Duration::from_secs(30)),
        )
        .unwrap();
    assert_eq!(reader.get("k1").unwrap(), Some(Bytes::from_static(b"v1")));
    let many = reader.get_many(&["k1", "k2", "k3"]).unwrap();
    assert_eq!(
        many,
        vec![
            Some(Bytes::from_static(b"v1")),
            Some(Bytes::from_static(b"v2")),
            None
        ]
    );
    let s = reader.stats();
    assert_eq!((s.redis_hits, s.redis_misses, s.backend_errors), (2, 1, 0));
    // The ttl reached Redis.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let pttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}k2"))
        .query(&mut conn)
        .unwrap();
    assert!(pttl > 0 && pttl <= 30_000, "pttl {pttl}");
    let pttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}k1"))
        .query(&mut conn)
        .unwrap();
    assert_eq!(pttl, -1, "no ttl given, none set");
    writer.invalidate("k1").unwrap();
    let fresh = RedisCache::builder(&url)
        .key_prefix(prefix)
        .build()
        .unwrap();
    assert_eq!(fresh.get("k1").unwrap(), None);
}

#[test]
fn invalidations_reach_other_near_caches() {
    let Some(url) = server() else { return };
    let prefix = unique("inv");
    let a = RedisCache::builder(&url)
        .key_prefix(prefix.clone())
        .near_ttl(Duration::from_secs(600))
        .build()
        .unwrap();
    let b = RedisCache::builder(&url)
        .key_prefix(prefix)
        .near_ttl(Duration::from_secs(600))
        .build()
        .unwrap();
    let _listener = b.spawn_invalidation_listener();
    a.insert("item", Bytes::from_static(b"old"), None).unwrap();
    assert_eq!(b.get("item").unwrap(), Some(Bytes::from_static(b"old")));
    // Give the subscription time to be established before publishing.
    std::thread::sleep(Duration::from_millis(300));
    a.insert("item", Bytes::from_static(b"new"), None).unwrap();
    let mut seen = None;
    for _ in 0..50 {
        seen = b.get("item").unwrap();
        if seen.as_deref() == Some(b"new".as_slice()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        seen,
        Some(Bytes::from_static(b"new")),
        "b's near copy was invalidated"
    );
}

#[test]
fn sorted_set_top_k_with_decay() {
    let Some(url) = server() else { return };
    let cache = RedisCache::builder(&url)
        .key_prefix(unique("topk"))
        .build()
        .unwrap();
    let t = cache.top_k("sellers");
    t.record_many(&[
        ("kettle", 5.0),
        ("toaster", 3.0),
        ("kettle", 1.0),
        ("mug", 4.0),
    ])
    .unwrap();
    assert_eq!(
        t.top(2).unwrap(),
        vec![("kettle".to_string(), 6.0), ("mug".to_string(), 4.0)]
    );
    t.decay(0.5).unwrap();
    assert_eq!(t.top(1).unwrap(), vec![("kettle".to_string(), 3.0)]);
    assert_eq!(t.decay(1.5).unwrap_err().kind(), ErrorKind::InvalidConfig);
    t.clear().unwrap();
    assert!(t.top(3).unwrap().is_empty());
}
