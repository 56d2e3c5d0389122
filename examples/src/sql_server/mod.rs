//! A Postgres wire-protocol endpoint for a [`QueryEngine`]: `psql`, JDBC and other
//! Postgres clients connect over TCP and run SQL on the engine's tables, reading and
//! changing them.
//!
//! The `sql_server` example serves a directory of Delta tables with it
//! ([`open_data_dir`]): every table there is writable, and `CREATE TABLE` makes new
//! ones there. Tests start it in-process on port 0.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use lakehouse_examples::sql_server::{Auth, SqlServer, open_data_dir};
//! use lakehouse_query::QueryEngine;
//!
//! let dir = std::path::Path::new("/data/lakehouse");
//! let (engine, tables) = open_data_dir(QueryEngine::builder(), dir).await?;
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
//!   Unlike Postgres, where such a string is one implicit transaction, the statements
//!   before the one that failed stay committed.
//! * **Extended query protocol**: parse, bind, describe, execute, close, sync; named
//!   and unnamed prepared statements and portals; parameters `$1`, `$2`, ... in the
//!   text or the binary format, typed by the plan where it fixes a type and by the
//!   client's declared type otherwise; results in text or binary, per column; a row
//!   limit on execute (the portal is suspended and resumed). Queries (`SELECT`,
//!   `WITH`, `VALUES`, `EXPLAIN`, `SHOW`) are planned once at parse, so a syntax error
//!   or a missing table is reported there; other statements run as text at execute,
//!   with their parameters written in as literals.
//! * **Writes**: `CREATE TABLE t (columns) [PARTITIONED BY (columns)]`, `CREATE TABLE
//!   t [PARTITIONED BY (columns)] AS SELECT ...`, `INSERT INTO t ... VALUES / SELECT`,
//!   `UPDATE t SET ... [WHERE ...]`, `DELETE FROM t [WHERE ...]`, `TRUNCATE t` and
//!   `MERGE INTO t USING s ON ... WHEN [NOT] MATCHED ...` run on the engine's writable
//!   tables and in its table catalog, as the `lakehouse-query` crate documents them
//!   ("Writing with SQL"). Over [`open_data_dir`], every table under the directory is
//!   writable and a created table is a new Delta table in the directory; a table
//!   another process creates there while the server runs is served from the first
//!   statement that names it. Each
//!   statement is one atomic commit (autocommit), made before its command tag is
//!   sent; a statement that fails commits nothing. In the extended protocol the
//!   parameters of `INSERT`, `UPDATE` and `DELETE` are typed by the plan (the column
//!   a value goes to or is compared with), and their planning errors are reported at
//!   parse.
//! * **Command tags**: `SELECT n`, `INSERT 0 n`, `UPDATE n`, `DELETE n`, `MERGE n`
//!   (`n` is the `count` the engine answers with: rows inserted, updated, deleted,
//!   or all three for `MERGE`), `CREATE TABLE` (`SELECT n` for `CREATE TABLE ... AS`,
//!   as Postgres answers), `TRUNCATE TABLE`, `CREATE VIEW`, `DROP ...`, and the
//!   leading keyword of any other statement.
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
//! * `DROP TABLE` fails with `0A000`: the engine would forget the table while its
//!   files stay in the directory.
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
use lakehouse_query::{EngineBuilder, QueryEngine};
use lakehouse_storage::TableRoot;
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

/// The engine that serves the Delta tables under `dir`, configured by `builder`, and
/// the names of the tables it serves, sorted.
///
/// `dir` becomes the engine's table catalog (a [`TableRoot`]): every directory
/// directly under it that holds a `_delta_log` is registered writable under the
/// directory's name (lower-cased; a name that is not a SQL identifier, letters, digits
/// and `_` not starting with a digit, is left out), and `CREATE TABLE t ...` creates
/// the Delta table `dir/t`. Fails with [`ErrorKind::InvalidInput`] when `dir` is not a
/// directory, or is itself a Delta table (serve its parent directory instead).
pub async fn open_data_dir(
    builder: EngineBuilder,
    dir: &Path,
) -> Result<(QueryEngine, Vec<String>)> {
    let shown = || dir.display().to_string();
    if !dir.is_dir() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{} is not a directory", dir.display()),
        )
        .with_path(shown()));
    }
    if dir.join("_delta_log").is_dir() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{} is a Delta table: serve the directory that holds it",
                dir.display()
            ),
        )
        .with_path(shown()));
    }
    let root = TableRoot::local(dir).map_err(|e| e.with_path(shown()))?;
    let engine = builder.catalog(Arc::new(root)).build();
    let names = engine
        .register_catalog_tables()
        .await
        .map_err(|e| e.with_path(shown()))?;
    Ok((engine, names))
}
