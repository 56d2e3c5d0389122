//! A Postgres wire-protocol endpoint over a directory of Delta tables: `psql`, JDBC and
//! other Postgres clients connect and run SQL on every table under the directory,
//! reading and changing them (`INSERT`, `UPDATE`, `DELETE`, `MERGE INTO`) and creating
//! new ones there (`CREATE TABLE [AS SELECT]`).
//!
//! ```text
//! LAKEHOUSE_SQL_PASSWORD=secret cargo run --release -p lakehouse-examples \
//!     --example sql_server -- --data-dir DIR --listen 127.0.0.1:5433 [--user NAME]
//! PGPASSWORD=secret psql -h 127.0.0.1 -p 5433 -U lakehouse -d lakehouse \
//!     -c 'CREATE TABLE prices (item BIGINT, price DOUBLE)' \
//!     -c 'INSERT INTO prices VALUES (1, 9.5), (2, 3.25)' \
//!     -c 'SELECT count(*) FROM events'
//! ```
//!
//! Each directory directly under `--data-dir` that holds a Delta table (a `_delta_log`)
//! is served, writable, under the directory's name; `CREATE TABLE t` makes the Delta
//! table `DIR/t`, which other engines (delta-rs, Spark, DuckDB) read as well. Each
//! statement is one Delta commit. Clients authenticate with SCRAM-SHA-256 as
//! `--user` (default `lakehouse`) with the password in the environment variable
//! `LAKEHOUSE_SQL_PASSWORD`; without one the server refuses to start, unless
//! `--no-auth`, which is accepted only on a loopback `--listen` address. `--listen`
//! defaults to `127.0.0.1:5433`; port 0 picks a free port. The first line printed is
//! `sql_server listening on ADDR`.
//!
//! The server logic (the protocol on the `pgwire` crate, the type mapping, error codes,
//! what is supported and refused) is in `lakehouse_examples::sql_server`.

use std::net::SocketAddr;
use std::path::PathBuf;

use lakehouse_examples::sql_server::{Auth, SqlServer, open_data_dir};
use lakehouse_query::QueryEngine;

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

const USAGE: &str =
    "usage: sql_server --data-dir DIR [--listen ADDR:PORT] [--user NAME] [--no-auth]
  the password is read from LAKEHOUSE_SQL_PASSWORD; --no-auth only on a loopback address";

#[derive(Debug)]
struct Args {
    data_dir: PathBuf,
    listen: SocketAddr,
    user: String,
    no_auth: bool,
}

fn parse_args() -> BoxResult<Args> {
    let mut data_dir = None;
    let mut listen: SocketAddr = "127.0.0.1:5433".parse()?;
    let mut user = "lakehouse".to_owned();
    let mut no_auth = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--data-dir" => data_dir = Some(PathBuf::from(value()?)),
            "--listen" => {
                let v = value()?;
                listen = v.parse().map_err(|e| format!("--listen {v}: {e}"))?;
            }
            "--user" => user = value()?,
            "--no-auth" => no_auth = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
        }
    }
    let data_dir = data_dir.ok_or_else(|| format!("--data-dir is required\n{USAGE}"))?;
    Ok(Args {
        data_dir,
        listen,
        user,
        no_auth,
    })
}

#[tokio::main]
async fn main() -> BoxResult<()> {
    let args = parse_args()?;
    let auth = if args.no_auth {
        Auth::None
    } else {
        let password = std::env::var("LAKEHOUSE_SQL_PASSWORD").map_err(|_| {
            "set LAKEHOUSE_SQL_PASSWORD to the password of --user (or pass --no-auth on a \
             loopback address)"
        })?;
        Auth::password(args.user.clone(), password)?
    };
    let (engine, tables) = open_data_dir(QueryEngine::builder(), &args.data_dir).await?;
    let server = SqlServer::new(engine, auth.clone())
        .bind(args.listen)
        .await?;
    println!("sql_server listening on {}", server.local_addr());
    println!(
        "tables under {} ({}): {}",
        args.data_dir.display(),
        tables.len(),
        if tables.is_empty() {
            "none".to_owned()
        } else {
            tables.join(", ")
        }
    );
    match auth {
        Auth::Password { user, .. } => println!("authentication: SCRAM-SHA-256, user {user}"),
        _ => println!("authentication: none (loopback only)"),
    }
    server.wait().await?;
    Ok(())
}
