//! The Postgres wire-protocol server against real clients: `psql` (the simple query
//! protocol, command tags, errors, authentication) and `tokio-postgres` (the extended
//! protocol: prepared statements, typed parameters, binary results, cancel requests,
//! DML with parameters). The server runs in-process on a free loopback port over a
//! temporary directory with one Delta table; tables created over the wire land there.
//! The `psql` tests say they were skipped when `psql` is not installed.

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::Arc;

use arrow::array::{
    BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use lakehouse_core::{ErrorKind, TableSource};
use lakehouse_examples::sql_server::{Auth, RunningServer, SqlServer, open_data_dir};
use lakehouse_query::QueryEngine;
use lakehouse_storage::{Location, Table, TableOptions};
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{NoTls, SimpleQueryMessage};

const USER: &str = "tester";
const PASSWORD: &str = "s3cret-pw";
/// 2026-11-23 in days since 1970-01-01.
const DAY: i32 = 20_780;
/// 2026-11-23 10:30:00 in microseconds since 1970-01-01.
const TS: i64 = DAY as i64 * 86_400_000_000 + (10 * 3600 + 30 * 60) * 1_000_000;

/// A temporary directory with an `orders` table of three rows (one with nulls).
async fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("price", DataType::Decimal128(10, 2), true),
        Field::new("day", DataType::Date32, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        Field::new("flag", DataType::Boolean, true),
        Field::new("score", DataType::Float64, true),
        Field::new("data", DataType::Binary, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(StringArray::from(vec![Some("apple"), Some("it's"), None])),
            Arc::new(
                Decimal128Array::from(vec![Some(1234), Some(-5), None])
                    .with_precision_and_scale(10, 2)
                    .expect("decimal type"),
            ),
            Arc::new(Date32Array::from(vec![Some(DAY), Some(DAY + 1), None])),
            Arc::new(TimestampMicrosecondArray::from(vec![
                Some(TS),
                Some(TS + 500_000),
                None,
            ])),
            Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
            Arc::new(Float64Array::from(vec![Some(1.5), Some(-0.25), None])),
            Arc::new(BinaryArray::from(vec![
                Some(&[1u8, 2][..]),
                Some(&[255u8][..]),
                None,
            ])),
        ],
    )
    .expect("batch");
    let table = Table::create(
        Location::local(dir.path().join("orders")).expect("location"),
        schema,
        TableOptions::new().name("orders"),
    )
    .await
    .expect("create table");
    table.append(vec![batch]).await.expect("append");
    dir
}

async fn start(dir: &tempfile::TempDir) -> RunningServer {
    start_serving(dir, &["orders"]).await
}

/// A server over `dir`, which holds the tables `expected`.
async fn start_serving(dir: &tempfile::TempDir, expected: &[&str]) -> RunningServer {
    let (engine, tables) = open_data_dir(QueryEngine::builder(), dir.path())
        .await
        .expect("open the data directory");
    assert_eq!(tables, expected);
    let auth = Auth::password(USER, PASSWORD).expect("auth");
    SqlServer::new(engine, auth)
        .bind("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("bind")
}

fn have_psql() -> bool {
    let found = Command::new("psql")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("psql is not installed: skipping a test that drives the server with psql");
    }
    found
}

/// Runs `psql` with `args` against the server (off the runtime's workers).
async fn psql(addr: SocketAddr, password: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new("psql");
    cmd.args([
        "-X",
        "-w",
        "-h",
        "127.0.0.1",
        "-p",
        &addr.port().to_string(),
    ])
    .args(["-U", USER, "-d", "lakehouse", "-v", "ON_ERROR_STOP=0"])
    .args(["-v", "VERBOSITY=verbose", "-At"])
    .args(args)
    .env("PGPASSWORD", password)
    .env("PGCONNECT_TIMEOUT", "20")
    .env("PGSSLMODE", "disable");
    tokio::task::spawn_blocking(move || cmd.output().expect("run psql"))
        .await
        .expect("psql task")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_reads_typed_rows_reports_errors_and_goes_on() {
    if !have_psql() {
        return;
    }
    let dir = data_dir().await;
    let server = start(&dir).await;
    let addr = server.local_addr();

    // Every mapped type in the text format, nulls as empty fields.
    let out = psql(
        addr,
        PASSWORD,
        &[
            "-F",
            "|",
            "-c",
            "SELECT id, name, price, day, ts, flag, score, data FROM orders ORDER BY id",
        ],
    )
    .await;
    assert!(out.status.success(), "psql failed: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "1|apple|12.34|2026-11-23|2026-11-23 10:30:00|t|1.5|\\x0102\n\
         2|it's|-0.05|2026-11-24|2026-11-23 10:30:00.5|f|-0.25|\\xff\n\
         3|||||||\n"
    );

    // Bad statements get their SQLSTATE, and the session goes on to the next one.
    let out = psql(
        addr,
        PASSWORD,
        &[
            "-c",
            "SELEC 1",
            "-c",
            "SELECT * FROM no_such_table",
            "-c",
            "SELECT no_such_column FROM orders",
            "-c",
            "BEGIN",
            "-c",
            "SELECT count(*), sum(score) FROM orders WHERE name <> 'x'",
        ],
    )
    .await;
    let stderr = text(&out.stderr);
    for code in ["42601", "42P01", "42703", "0A000"] {
        assert!(
            stderr.contains(&format!("ERROR:  {code}")),
            "no {code} in {stderr}"
        );
    }
    assert_eq!(text(&out.stdout), "2|1.25\n", "stderr: {stderr}");

    // Several statements in one query string: each answers; the first error ends it.
    let out = psql(
        addr,
        PASSWORD,
        &["-c", "SELECT 1; SELECT 'a;b' AS s; SELECT nope; SELECT 4"],
    )
    .await;
    assert_eq!(text(&out.stdout), "1\na;b\n");
    assert!(text(&out.stderr).contains("42703"), "{}", text(&out.stderr));

    // A wrong password is refused with 28P01 and the connection closes.
    let out = psql(addr, "wrong", &["-c", "SELECT 1"]).await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr).to_lowercase();
    assert!(
        stderr.contains("28p01") || stderr.contains("password authentication failed"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    server.shutdown().await;
}

/// A connected `tokio-postgres` client (its connection driven on the runtime).
async fn client(
    addr: SocketAddr,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut config = tokio_postgres::Config::new();
    config.user(USER).password(password).dbname("lakehouse");
    let (client, connection) = config.connect_raw(stream, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// A value's bytes as the server sent them (binary format), whatever its type.
struct Raw(Option<Vec<u8>>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(
        _ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw.to_vec())))
    }

    fn from_sql_null(_ty: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

fn code(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_owned())
        .unwrap_or_else(|| format!("no code: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_prepared_statements_and_cancel() {
    let dir = data_dir().await;
    let server = start(&dir).await;
    let addr = server.local_addr();
    let client = client(addr, PASSWORD).await.expect("log in");

    // A prepared statement: parameter types inferred from the plan, run twice.
    let stmt = client
        .prepare("SELECT id, name, score, flag, data FROM orders WHERE id >= $1 AND score < $2 ORDER BY id")
        .await
        .expect("prepare");
    assert_eq!(stmt.params(), &[Type::INT8, Type::FLOAT8]);
    let types: Vec<&Type> = stmt.columns().iter().map(|c| c.type_()).collect();
    assert_eq!(
        types,
        [
            &Type::INT8,
            &Type::TEXT,
            &Type::FLOAT8,
            &Type::BOOL,
            &Type::BYTEA
        ]
    );
    let rows = client
        .query(&stmt, &[&1i64, &10.0f64])
        .await
        .expect("query");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get::<_, i64>(0), 1);
    assert_eq!(rows[0].get::<_, &str>(1), "apple");
    assert_eq!(rows[0].get::<_, f64>(2), 1.5);
    assert!(rows[0].get::<_, bool>(3));
    assert_eq!(rows[0].get::<_, Vec<u8>>(4), vec![1, 2]);
    assert_eq!(rows[1].get::<_, &str>(1), "it's");
    let rows = client
        .query(&stmt, &[&2i64, &0.0f64])
        .await
        .expect("query again");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i64>(0), 2);

    // A text parameter read as the column's type; nulls in the binary format.
    let rows = client
        .query(
            "SELECT name, price, day, ts FROM orders WHERE id = $1 OR name IS NULL ORDER BY id",
            &[&3i64],
        )
        .await
        .expect("query with nulls");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, Option<&str>>(0), None);
    assert!(rows[0].get::<_, Raw>(1).0.is_none());
    // Binary date, timestamp and numeric, as Postgres encodes them.
    let rows = client
        .query(
            "SELECT price, day, ts FROM orders WHERE name = $1",
            &[&"apple"],
        )
        .await
        .expect("query by name");
    let numeric = rows[0].get::<_, Raw>(0).0.expect("price");
    // 12.34: 2 base-10000 digits, weight 0, positive, scale 2: [12, 3400].
    assert_eq!(numeric, [0, 2, 0, 0, 0, 0, 0, 2, 0, 12, 0x0d, 0x48]);
    let day = rows[0].get::<_, Raw>(1).0.expect("day");
    assert_eq!(
        i32::from_be_bytes(day.try_into().expect("4 bytes")),
        DAY - 10_957
    );
    let ts = rows[0].get::<_, Raw>(2).0.expect("ts");
    assert_eq!(
        i64::from_be_bytes(ts.try_into().expect("8 bytes")),
        TS - 10_957 * 86_400_000_000
    );

    // Errors at parse carry their SQLSTATE; the session goes on.
    let e = client
        .prepare("SELECT nope FROM orders")
        .await
        .expect_err("no such column");
    assert_eq!(code(&e), "42703");
    let e = client
        .prepare("SELECT * FROM nowhere")
        .await
        .expect_err("no such table");
    assert_eq!(code(&e), "42P01");
    let e = client.prepare("SELEC 1").await.expect_err("syntax");
    assert_eq!(code(&e), "42601");
    let messages = client
        .simple_query("SELECT count(*) FROM orders")
        .await
        .expect("simple");
    let counted = messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(counted.as_deref(), Some("3"));

    // A cancel request stops a query that would run for hours: 57014. The request
    // is repeated until it lands (it is ignored while no query is running yet).
    let token = client.cancel_token();
    let long = tokio::spawn(async move {
        client
            .query(
                "SELECT max(value % 7) FROM generate_series(1, 100000000000)",
                &[],
            )
            .await
    });
    let mut attempts = 0;
    while !long.is_finished() {
        attempts += 1;
        assert!(attempts <= 600, "the query was not cancelled");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        token
            .cancel_query_raw(stream, NoTls)
            .await
            .expect("send cancel");
    }
    let e = long.await.expect("query task").expect_err("cancelled");
    assert_eq!(code(&e), "57014");

    // A wrong password: 28P01.
    let e = client_error(addr, "wrong").await;
    assert_eq!(code(&e), "28P01");
    server.shutdown().await;
}

async fn client_error(addr: SocketAddr, password: &str) -> tokio_postgres::Error {
    match client(addr, password).await {
        Ok(_) => panic!("logged in with a wrong password"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn no_auth_is_refused_off_loopback() {
    let e = SqlServer::new(QueryEngine::new(), Auth::None)
        .bind("0.0.0.0:0".parse().expect("address"))
        .await
        .expect_err("no auth on every interface");
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    assert!(Auth::password("u", "").is_err());
    let server = SqlServer::new(QueryEngine::new(), Auth::None)
        .bind("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("no auth on loopback");
    let client = client(server.local_addr(), "anything")
        .await
        .expect("log in");
    let rows = client
        .query("SELECT $1::BIGINT + 1", &[&41i64])
        .await
        .expect("query");
    assert_eq!(rows[0].get::<_, i64>(0), 42);
    server.shutdown().await;
}

/// The version of the Delta table `dir/name`, read from disk.
async fn version_on_disk(dir: &tempfile::TempDir, name: &str) -> u64 {
    let path = dir.path().join(name);
    assert!(path.join("_delta_log").is_dir(), "no Delta log in {path:?}");
    let table = Table::open(Location::local(&path).expect("location"))
        .await
        .expect("open table");
    table.version().await.expect("version")
}

/// The rows of a simple query, each as its text fields (`None` for null).
async fn simple_rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let messages = client.simple_query(sql).await.expect(sql);
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).map(str::to_owned))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .collect()
}

fn row(fields: &[&str]) -> Vec<Option<String>> {
    fields
        .iter()
        .map(|f| (*f != "NULL").then(|| (*f).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_create_and_change_tables_in_the_data_directory() {
    let dir = data_dir().await;
    let server = start(&dir).await;
    let client = client(server.local_addr(), PASSWORD).await.expect("log in");

    // CREATE TABLE makes a Delta table under the directory, at version 0.
    let n = client
        .execute(
            "CREATE TABLE prices (item BIGINT NOT NULL, name VARCHAR, price DOUBLE)",
            &[],
        )
        .await
        .expect("create table");
    assert_eq!(n, 0);
    assert_eq!(version_on_disk(&dir, "prices").await, 0);

    // INSERT: `INSERT 0 n`; with parameters typed by the columns they go to.
    let n = client
        .execute(
            "INSERT INTO prices VALUES (1, 'tea', 2.5), (2, 'coffee', 4.0), (3, 'milk', 1.25)",
            &[],
        )
        .await
        .expect("insert values");
    assert_eq!(n, 3);
    let insert = client
        .prepare("INSERT INTO prices (item, name, price) VALUES ($1, $2, $3)")
        .await
        .expect("prepare insert");
    assert_eq!(insert.params(), &[Type::INT8, Type::TEXT, Type::FLOAT8]);
    let n = client
        .execute(&insert, &[&4i64, &"juice", &3.0f64])
        .await
        .expect("insert with parameters");
    assert_eq!(n, 1);

    // UPDATE and DELETE with parameters: `UPDATE n`, `DELETE n`.
    let n = client
        .execute(
            "UPDATE prices SET price = price * 2 WHERE item = $1",
            &[&1i64],
        )
        .await
        .expect("update");
    assert_eq!(n, 1);
    let n = client
        .execute("DELETE FROM prices WHERE price < $1", &[&2.0f64])
        .await
        .expect("delete");
    assert_eq!(n, 1);

    // CREATE TABLE AS SELECT (`SELECT n`), then MERGE from it: one update, one insert.
    let n = client
        .execute(
            "CREATE TABLE price_changes AS SELECT * FROM \
             (VALUES (2, 'coffee', 5.0), (9, 'cake', 6.5)) AS v(item, name, price)",
            &[],
        )
        .await
        .expect("create table as select");
    assert_eq!(n, 2);
    assert_eq!(version_on_disk(&dir, "price_changes").await, 1);
    let n = client
        .execute(
            "MERGE INTO prices p USING price_changes c ON p.item = c.item \
             WHEN MATCHED THEN UPDATE SET price = c.price \
             WHEN NOT MATCHED THEN INSERT (item, name, price) VALUES (c.item, c.name, c.price)",
            &[],
        )
        .await
        .expect("merge");
    assert_eq!(n, 2);

    let expected = vec![
        row(&["1", "tea", "5"]),
        row(&["2", "coffee", "5"]),
        row(&["4", "juice", "3"]),
        row(&["9", "cake", "6.5"]),
    ];
    let select = "SELECT item, name, price FROM prices ORDER BY item";
    assert_eq!(simple_rows(&client, select).await, expected);
    // Create, two inserts, update, delete, merge: one commit each.
    assert_eq!(version_on_disk(&dir, "prices").await, 5);

    // The table that was there before the server started is writable too.
    let n = client
        .execute("DELETE FROM orders WHERE name IS NULL", &[])
        .await
        .expect("delete from orders");
    assert_eq!(n, 1);
    assert_eq!(version_on_disk(&dir, "orders").await, 2);

    // Failing statements get their SQLSTATE, commit nothing, and the session goes on.
    let failing = [
        // A text that is no number, for a BIGINT column.
        ("INSERT INTO prices VALUES ('x', 'bad', 1.0)", "42804"),
        ("UPDATE prices SET nope = 1", "42703"),
        ("DELETE FROM prices WHERE nope = 1", "42703"),
        ("INSERT INTO nowhere VALUES (1)", "42P01"),
        (
            "MERGE INTO prices p USING price_changes c ON p.item = c.item \
             WHEN MATCHED THEN UPDATE SET price = c.name",
            "42804",
        ),
        ("CREATE TABLE prices (a BIGINT)", "42P07"),
        ("DROP TABLE prices", "0A000"),
    ];
    for (sql, expected_code) in failing {
        let e = client.execute(sql, &[]).await.expect_err(sql);
        assert_eq!(code(&e), expected_code, "{sql}: {e}");
        let e = client.simple_query(sql).await.expect_err(sql);
        assert_eq!(code(&e), expected_code, "{sql} (simple query): {e}");
    }
    assert_eq!(version_on_disk(&dir, "prices").await, 5);
    assert_eq!(simple_rows(&client, select).await, expected);

    // A table another writer creates under the directory while the server runs is
    // served from the first statement that names it, writable.
    let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
    let other = Table::create(
        Location::local(dir.path().join("late")).expect("location"),
        schema.clone(),
        TableOptions::new().name("late"),
    )
    .await
    .expect("create a table on disk");
    other
        .append(vec![
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![5, 6]))])
                .expect("batch"),
        ])
        .await
        .expect("append");
    let n = client
        .execute("INSERT INTO late VALUES (7)", &[])
        .await
        .expect("insert into a table created on disk");
    assert_eq!(n, 1);
    assert_eq!(
        simple_rows(&client, "SELECT sum(n) FROM late").await,
        vec![row(&["18"])]
    );
    let e = client
        .simple_query("CREATE TABLE late (n BIGINT)")
        .await
        .expect_err("exists");
    assert_eq!(code(&e), "42P07");
    server.shutdown().await;

    // A new server over the directory serves the tables created over the wire.
    let server = start_serving(&dir, &["late", "orders", "price_changes", "prices"]).await;
    let again = self::client(server.local_addr(), PASSWORD)
        .await
        .expect("log in again");
    assert_eq!(simple_rows(&again, select).await, expected);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_writes_with_postgres_command_tags() {
    if !have_psql() {
        return;
    }
    let dir = data_dir().await;
    let server = start(&dir).await;
    let addr = server.local_addr();
    let out = psql(
        addr,
        PASSWORD,
        &[
            "-F",
            "|",
            "-c",
            "CREATE TABLE stock (item BIGINT, region VARCHAR, qty INT)",
            "-c",
            "INSERT INTO stock VALUES (1, 'eu', 10), (2, 'us', 5), (3, 'eu', 0), (4, 'us', 7)",
            "-c",
            "UPDATE stock SET qty = qty + 1 WHERE region = 'eu'",
            "-c",
            "DELETE FROM stock WHERE qty = 1",
            "-c",
            "MERGE INTO stock s USING (SELECT id, name FROM orders) o ON s.item = o.id \
             WHEN MATCHED AND s.region = 'eu' THEN DELETE \
             WHEN MATCHED THEN UPDATE SET qty = s.qty * 10 \
             WHEN NOT MATCHED THEN INSERT VALUES (o.id, o.name, 0)",
            "-c",
            "CREATE TABLE by_region PARTITIONED BY (region) AS \
             SELECT qty, region FROM stock WHERE region IS NOT NULL",
            "-c",
            "SELECT item, region, qty FROM stock ORDER BY item",
            "-c",
            "SELECT region, sum(qty) FROM by_region GROUP BY region",
            "-c",
            "TRUNCATE stock",
            "-c",
            "SELECT count(*) FROM stock",
        ],
    )
    .await;
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "psql failed: {stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    // The update adds 1 to items 1 and 3, the delete takes item 3 (qty 1); the merge
    // deletes item 1 (eu), multiplies item 2's qty, inserts order 3 (no item 3 left).
    assert_eq!(
        text(&out.stdout),
        "CREATE TABLE\nINSERT 0 4\nUPDATE 2\nDELETE 1\nMERGE 3\nSELECT 2\n\
         2|us|50\n3||0\n4|us|7\n\
         us|57\n\
         TRUNCATE TABLE\n0\n"
    );
    // The partitioned table: version 0 created, version 1 its rows, in region=us/.
    assert_eq!(version_on_disk(&dir, "by_region").await, 1);
    assert!(dir.path().join("by_region").join("region=us").is_dir());
    server.shutdown().await;
}
