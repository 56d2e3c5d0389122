//! Reading the MovieLens `u.data` format.

use std::io::BufRead;
use std::path::Path;

use lakehouse_core::{Error, ErrorKind, Result};

use crate::data::Dataset;

/// Reads MovieLens `u.data` lines (`user item rating unix-seconds`, separated by tabs
/// or spaces) into a [`Dataset`] with integer ids, the rating as weight and the time in
/// microseconds. Blank lines are skipped.
///
/// Errors with [`ErrorKind::Corrupt`] naming the line of the first malformed row (a line
/// that is not UTF-8 included); a reader that fails gives [`ErrorKind::Io`].
pub fn read_movielens(reader: impl BufRead) -> Result<Dataset> {
    let mut ds = Dataset::new();
    for (n, line) in reader.lines().enumerate() {
        let line_no = n as u64 + 1;
        let line = line.map_err(|e| Error::from(e).with_offset(line_no))?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: &str| {
            Error::new(ErrorKind::Corrupt, format!("malformed u.data line: {what}"))
                .with_offset(line_no)
        };
        let mut fields = line.split_whitespace();
        let mut next = |name: &str| fields.next().ok_or_else(|| bad(&format!("missing {name}")));
        let user: i64 = next("user")?
            .parse()
            .map_err(|_| bad("user is not an integer"))?;
        let item: i64 = next("item")?
            .parse()
            .map_err(|_| bad("item is not an integer"))?;
        let rating: f32 = next("rating")?
            .parse()
            .map_err(|_| bad("rating is not a number"))?;
        let secs: i64 = next("timestamp")?
            .parse()
            .map_err(|_| bad("timestamp is not an integer"))?;
        ds.push(user, item, rating, secs.saturating_mul(1_000_000))
            .map_err(|e| e.with_offset(line_no))?;
    }
    Ok(ds)
}

/// [`read_movielens`] on a file.
pub fn read_movielens_file(path: impl AsRef<Path>) -> Result<Dataset> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| {
        Error::new(ErrorKind::Io, "cannot open u.data")
            .with_path(path.display().to_string())
            .with_source(e)
    })?;
    read_movielens(std::io::BufReader::new(file))
        .map_err(|e| e.with_path(path.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;

    #[test]
    fn reads_rows_and_reports_bad_lines() {
        let ds = read_movielens(
            "196\t242\t3\t881250949\n186\t302\t3\t891717742\n\n196\t377\t1\t878887116\n".as_bytes(),
        )
        .unwrap();
        assert_eq!(ds.len(), 3);
        assert_eq!(ds.num_users(), 2);
        assert_eq!(ds.items().get(&Id::Int(302)), Some(1));
        assert_eq!(ds.interactions()[0].timestamp, 881_250_949_000_000);
        let e = read_movielens("1\t2\t3\t4\n1\tx\t3\t4\n".as_bytes()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert_eq!(e.context().offset, Some(2));
        let e = read_movielens("1\t2\t-3\t4\n".as_bytes()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
}
