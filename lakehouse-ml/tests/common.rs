//! Shared fixtures.

use lakehouse_ml::{Als, Dataset, Id, Synthetic, SyntheticData};

/// 300 users and 400 items in 5 taste groups, 90% of interactions in-group.
pub(crate) fn planted() -> SyntheticData {
    Synthetic::new(300, 400, 12_000)
        .groups(5)
        .affinity(0.9)
        .seed(3)
        .generate()
        .expect("valid synthetic parameters")
}

/// An ALS with small settings that trains quickly in debug builds.
pub(crate) fn small_als(seed: u64) -> Als {
    Als::builder()
        .factors(16)
        .iterations(8)
        .regularization(0.1)
        .seed(seed)
        .build()
        .expect("valid ALS parameters")
}

/// The users of `data` that have at least one interaction.
pub(crate) fn active_users(data: &Dataset) -> Vec<Id> {
    let m = data.matrix();
    (0..m.users())
        .filter(|&u| !m.by_user().row(u).0.is_empty())
        .filter_map(|u| data.users().id(u as u32).cloned())
        .collect()
}

/// The items `user` interacted with in `data`.
pub(crate) fn items_of(data: &Dataset, user: &Id) -> Vec<Id> {
    let Some(u) = data.users().get(user) else {
        return Vec::new();
    };
    data.interactions()
        .iter()
        .filter(|x| x.user == u)
        .filter_map(|x| data.items().id(x.item).cloned())
        .collect()
}
