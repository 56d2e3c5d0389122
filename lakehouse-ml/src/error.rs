//! Constructors for the errors this crate raises most often. The error type itself is
//! the workspace's [`lakehouse_core::Error`], re-exported at the crate root; its
//! context names the user or item id (key), the file (path), the Arrow column
//! (column), the format version (version) and the line number (offset).

use lakehouse_core::{Error, ErrorKind};

use crate::Id;

/// Stored data or a text file failed validation ([`ErrorKind::Corrupt`]).
pub(crate) fn corrupt(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Corrupt, message)
}

/// `model` was used before it was fitted ([`ErrorKind::NotFitted`]).
pub(crate) fn not_fitted(model: &str) -> Error {
    Error::new(
        ErrorKind::NotFitted,
        format!("{model} must be fitted first"),
    )
}

/// The model never saw user `id` ([`ErrorKind::UnknownUser`]).
pub(crate) fn unknown_user(id: &Id) -> Error {
    Error::new(ErrorKind::UnknownUser, "user was never seen by the model").with_key(id.to_string())
}

/// The model never saw item `id` ([`ErrorKind::UnknownItem`]).
pub(crate) fn unknown_item(id: &Id) -> Error {
    Error::new(ErrorKind::UnknownItem, "item was never seen by the model").with_key(id.to_string())
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn display_names_kind_message_and_key() {
        let e = unknown_user(&Id::from("alice"));
        assert_eq!(e.kind(), ErrorKind::UnknownUser);
        assert_eq!(
            e.to_string(),
            "unknown user: user was never seen by the model (key=\"alice\")"
        );
    }

    #[test]
    fn io_errors_keep_their_source() {
        let e = Error::from(std::io::Error::other("disk on fire"));
        assert_eq!(e.kind(), ErrorKind::Io);
        assert_eq!(
            e.source().map(|s| s.to_string()).as_deref(),
            Some("disk on fire")
        );
    }
}
