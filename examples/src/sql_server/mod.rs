//! A Postgres wire-protocol endpoint for a [`QueryEngine`]: `psql`, JDBC and other
//! Postgres clients connect over TCP and run SQL on the engine's tables.
//!
//! The `sql_server` example serves every Delta table under a directory with it;
//! tests start it in-process on port 0.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use lakehouse_examples::sql_server::{Auth, SqlServer, register_tables};
//! use lakehouse_query::QueryEngine;
//!
//! let engine = QueryEngine::new();
//! let tables = register_tables(&engine, std::path::Path::new("/data/lakehouse")).await?;
//! println!("serving {tables:?}");
//! let auth = Auth::password("analyst", std::env::var("LAKEHOUSE_SQL_PASSWORD")?)?;
//! let server = SqlServer::new(engine, auth).bind("127.0.0.1:5433".parse()?).await?;
//! println!("listening on {}", server.local_addr());
//! server.wait().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # The protocol library
//!
//! The server is built on [`pgwire`] 0.42 (feature `server-api-ring` only: the server
//! API and SCRAM on `ring`, no client API, no TLS set up, no extension types, nothing
//! that pulls `aws-lc-sys`). `datafusion-postgres` 0.19 does support DataFusion 55, but
//! it serves a DataFusion `SessionContext` directly: statements would bypass the
//! [`QueryEngine`] (its plan and result caches, workload queues, version-pinned scans,
//! materialized views and the DML it adds), and it turns on DataFusion's default
//! features. Here every statement goes to [`QueryEngine::sql`] or, for a prepared
//! query, to a [`lakehouse_query::PreparedQuery`].
//!
//! # What is supported
//!
//! * **Simple query protocol**: a query string of one or more statements; they run in
//!   order and the first error ends the string (as in Postgres); the session goes on.
//! * **Extended query protocol**: parse, bind, describe, execute, close, sync; named
//!   and unnamed prepared statements and portals; parameters `$1`, `$2`, ... in the
//!   text or the binary format, typed by the plan where it fixes a type and by the
//!   client's declared type otherwise; results in text or binary, per column; a row
//!   limit on execute (the portal is suspended and resumed). Queries (`SELECT`,
//!   `WITH`, `VALUES`, `EXPLAIN`, `SHOW`) are planned once at parse, so a syntax error
//!   or a missing table is reported there; other statements run as text at execute,
//!   with their parameters written in as literals.
//! * **Command tags**: `SELECT n`, `INSERT 0 n`, `UPDATE n`, `DELETE n`, `MERGE n`
//!   (`n` is the `count` the engine answers with), `CREATE TABLE` (`SELECT n` for
//!   `CREATE TABLE ... AS`), `CREATE VIEW`, `DROP ...`, and the leading keyword of
//!   any other statement.
//! * **Types**: see the table in [`types`]. Refused with `0A000`:
//!   intervals, durations, lists, structs, maps, unions (cast them to text).
//! * **Errors** carry a SQLSTATE chosen by the error's kind: [`sqlstate`] has the
//!   table (`42601` syntax error, `42P01` undefined table, `42703` undefined column,
//!   `0A000` unsupported, `57014` cancelled, ...).
//! * **Cancel requests** (`Ctrl-C` in `psql`, `Statement.cancel()` in JDBC) stop the
//!   running statement, which fails with `57014`.
//! * **Authentication**: SCRAM-SHA-256 against one user name and password
//!   ([`Auth::password`]); a wrong password or another user name fails with `28P01`
//!   and the connection is closed. [`Auth::None`] is accepted only on a loopback
//!   address.
//!
//! # What is refused or ignored
//!
//! * Transactions: `BEGIN` fails with `0A000` (each statement commits on its own);
//!   `COMMIT` and `ROLLBACK` answer their tag and do nothing.
//! * `SET` of the session variables clients send on connecting (`client_encoding`,
//!   `DateStyle`, `TimeZone`, `extra_float_digits`, `application_name`,
//!   `search_path`, ...) is accepted and not applied: the server always speaks UTF-8,
//!   ISO dates and UTC. `SET` of an engine option fails with `0A000`: the engine is
//!   shared by every session.
//! * The Postgres system catalogs (`pg_catalog`, `information_schema` as Postgres
//!   has it) are not emulated: `psql`'s `\d` and BI tools' schema browsers do not
//!   work; DataFusion's `SHOW TABLES` and `information_schema.columns` do when the
//!   engine enables them.
//! * TLS (`sslmode=require` fails; `prefer`, the default, falls back to plain TCP),
//!   `COPY`, `LISTEN`/`NOTIFY`, cursors declared in SQL.
//!
//! # Runtime
//!
//! [`SqlServer::bind`] spawns the accept loop on the current tokio runtime, and one
//! task per connection; statements run on the engine as they would in-process.

mod auth;
mod errors;
mod handler;
mod sql_text;
pub mod types;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use lakehouse_core::{Error, ErrorKind, Result};
use lakehouse_query::QueryEngine;
use lakehouse_storage::{Location, Table};
use pgwire::api::auth::StartupHandler;
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::{ConnectionManager, PgWireServerHandlers};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use self::auth::Auth;
pub use self::errors::sqlstate;

use self::auth::Startup;
use self::handler::Statements;

/// A Postgres wire-protocol server for one [`QueryEngine`], not yet listening.
#[derive(Debug)]
pub struct SqlServer {
    engine: QueryEngine,
    auth: Auth,
}

/// What every connection of one server shares.
#[derive(Debug)]
struct Handlers {
    statements: Arc<Statements>,
    startup: Arc<Startup>,
    cancel: Arc<DefaultCancelHandler>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.statements.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.statements.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.cancel.clone()
    }
}

impl SqlServer {
    /// A server answering with `engine`'s tables, its clients authenticated by `auth`.
    pub fn new(engine: QueryEngine, auth: Auth) -> Self {
        SqlServer { engine, auth }
    }

    /// Listens on `addr` (port 0: any free port) and serves clients until
    /// [`RunningServer::shutdown`]. Fails with [`ErrorKind::InvalidConfig`] for
    /// [`Auth::None`] on an address that is not loopback.
    pub async fn bind(self, addr: SocketAddr) -> Result<RunningServer> {
        if matches!(self.auth, Auth::None) && !addr.ip().is_loopback() {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "a server without authentication may listen only on a loopback address, \
                     not {addr}"
                ),
            ));
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::from(e).prefixed(format!("listening on {addr}")))?;
        let local_addr = listener.local_addr()?;
        let manager = Arc::new(ConnectionManager::new());
        let handlers = Arc::new(Handlers {
            statements: Arc::new(Statements::new(self.engine)),
            startup: Arc::new(Startup::new(&self.auth, manager.clone())),
            cancel: Arc::new(DefaultCancelHandler::new(manager)),
        });
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, handlers, stopped));
        Ok(RunningServer {
            local_addr,
            stop,
            task,
        })
    }
}

async fn accept_loop(
    listener: TcpListener,
    handlers: Arc<Handlers>,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _peer)) => {
                    let _ = socket.set_nodelay(true);
                    let handlers = handlers.clone();
                    tokio::spawn(async move {
                        // A connection's I/O error ends that connection only.
                        let _ = pgwire::tokio::process_socket(socket, None, handlers).await;
                    });
                }
                Err(e) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    eprintln!("sql_server: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = &mut stopped => return,
        }
    }
}

/// A listening server; dropping it leaves it running until the runtime stops.
#[derive(Debug)]
pub struct RunningServer {
    local_addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl RunningServer {
    /// The address clients connect to (with the port chosen for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections; sessions already open finish on their own.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }

    /// Serves until the process ends (or the accept loop fails, which is a bug).
    pub async fn wait(self) -> Result<()> {
        let RunningServer { stop, task, .. } = self;
        let result = task.await;
        drop(stop);
        result.map_err(|e| Error::new(ErrorKind::Internal, format!("the accept loop failed: {e}")))
    }
}

/// Registers every Delta table under `dir` in `engine`: each directory directly
/// under `dir` that holds a `_delta_log`, named by the directory's name (and `dir`
/// itself, if it is a table). Returns the names, sorted.
pub async fn register_tables(engine: &QueryEngine, dir: &Path) -> Result<Vec<String>> {
    let mut candidates = vec![dir.to_path_buf()];
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::from(e).with_path(dir.display().to_string()))?;
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            candidates.push(entry.path());
        }
    }
    let mut names = Vec::new();
    for path in candidates {
        if !path.join("_delta_log").is_dir() {
            continue;
        }
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        let table = Table::open(Location::local(&path)?)
            .await
            .map_err(|e| e.with_path(path.display().to_string()))?;
        engine.register_table(&name, Arc::new(table))?;
        names.push(name);
    }
    names.sort();
    Ok(names)
}
