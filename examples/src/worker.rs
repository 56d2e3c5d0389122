//! The query worker of the `lakehouse_worker` binary (feature `distributed`): the
//! command line, and the store openers a worker needs for the tables coordinators
//! send it (local directories always; S3 with feature `s3`).

use std::net::SocketAddr;

use lakehouse_query::distributed::WorkerOptions;

/// `lakehouse_worker`'s usage.
pub const USAGE: &str = "\
usage: lakehouse_worker --listen HOST:PORT [--s3-endpoint URL] [--s3-region REGION]

Runs a distributed query worker: coordinators (QueryEngine::builder().distributed(..))
send it stages of their plans over gRPC. Tables in local directories are read from the
same paths (a directory shared by the processes); S3 tables (feature s3) from the bucket
the coordinator's table names, with the endpoint and region given here and credentials
from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.";

/// What `lakehouse_worker` runs with.
#[derive(Debug, Clone)]
pub struct WorkerArgs {
    /// Where it listens.
    pub listen: SocketAddr,
    /// The endpoint of an S3-compatible server (`None`: AWS).
    pub s3_endpoint: Option<String>,
    /// The S3 region (`None`: `AWS_REGION`).
    pub s3_region: Option<String>,
}

impl WorkerArgs {
    /// Parses the arguments after the program name.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<WorkerArgs, String> {
        let mut listen = None;
        let mut s3_endpoint = None;
        let mut s3_region = None;
        let mut it = args.into_iter();
        while let Some(flag) = it.next() {
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                None => (flag.clone(), None),
            };
            if name == "--help" || name == "-h" {
                return Err(USAGE.to_owned());
            }
            let value = match inline.or_else(|| it.next()) {
                Some(v) => v,
                None => return Err(format!("{name} needs a value\n{USAGE}")),
            };
            match name.as_str() {
                "--listen" => {
                    listen = Some(
                        value
                            .parse::<SocketAddr>()
                            .map_err(|e| format!("--listen {value}: {e}\n{USAGE}"))?,
                    )
                }
                "--s3-endpoint" => s3_endpoint = Some(value),
                "--s3-region" => s3_region = Some(value),
                _ => return Err(format!("unknown flag {name}\n{USAGE}")),
            }
        }
        Ok(WorkerArgs {
            listen: listen.ok_or_else(|| format!("--listen is required\n{USAGE}"))?,
            s3_endpoint,
            s3_region,
        })
    }

    /// The worker's store openers: local directories, and S3 buckets with feature `s3`.
    pub fn options(&self) -> WorkerOptions {
        let options = WorkerOptions::new();
        #[cfg(feature = "s3")]
        let options = {
            let endpoint = self.s3_endpoint.clone();
            let region = self.s3_region.clone();
            options.store_opener("s3", move |location| {
                let bucket = location
                    .strip_prefix("s3://")
                    .unwrap_or(location)
                    .trim_end_matches('/')
                    .to_owned();
                let location = lakehouse_storage::Location::s3(lakehouse_storage::S3Config {
                    bucket,
                    prefix: String::new(),
                    region: region.clone(),
                    endpoint: endpoint.clone(),
                    access_key_id: None,
                    secret_access_key: None,
                })?;
                Ok(location.store().clone())
            })
        };
        options
    }
}
