//! The statements of a session: the simple query protocol (a query string of one or
//! more statements) and the extended one (parse, bind, describe, execute), both handed
//! to the [`QueryEngine`].

use std::fmt::Debug;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef, UInt64Type};
use async_trait::async_trait;
use futures::{Sink, stream};
use lakehouse_core::{Error, ErrorKind, Scalar};
use lakehouse_query::{PreparedQuery, QueryEngine, QueryResult};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DataRowEncoder, DescribePortalResponse, DescribeStatementResponse, FieldFormat, FieldInfo,
    QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::data::DataRow;

use super::errors::{error_info, pg_error, pg_refusal, sqlstate};
use super::sql_text::{
    bind_literals, leading_words, parameter_count, split_statements, top_level_words,
};
use super::types;

/// What a statement is, for the server: rows to send, or a command and its tag.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// Returns rows (`SELECT`, `WITH`, `VALUES`, `EXPLAIN`, `SHOW`, ...).
    Query,
    /// Runs in the engine and answers a command tag (`INSERT`, `CREATE TABLE`, ...).
    Command(String),
    /// A session setting a client sends (`SET extra_float_digits = 3`): accepted,
    /// not applied.
    Setting,
    /// `COMMIT` / `ROLLBACK`: outside a transaction there is nothing to end.
    EndTransaction(String),
    /// `BEGIN`: refused, each statement commits on its own.
    BeginTransaction,
    /// `SET` of an engine option: refused, it would change every session.
    EngineSetting,
    /// `DROP TABLE`: refused, the engine would forget the table but its files would
    /// stay in the table catalog.
    DropTable,
}

/// Session variables that clients set on connecting; the server accepts and ignores
/// them (it always speaks UTF-8, ISO dates and UTC).
const CLIENT_SETTINGS: &[&str] = &[
    "APPLICATION_NAME",
    "BYTEA_OUTPUT",
    "CLIENT_ENCODING",
    "CLIENT_MIN_MESSAGES",
    "DATESTYLE",
    "EXTRA_FLOAT_DIGITS",
    "IDLE_IN_TRANSACTION_SESSION_TIMEOUT",
    "INTERVALSTYLE",
    "LC_MESSAGES",
    "LOCK_TIMEOUT",
    "SEARCH_PATH",
    "SESSION",
    "STANDARD_CONFORMING_STRINGS",
    "STATEMENT_TIMEOUT",
    "TIME",
    "TIMEZONE",
];

fn classify(sql: &str) -> Kind {
    let words = leading_words(sql, 4);
    let word = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    match word(0) {
        "SELECT" | "WITH" | "VALUES" | "EXPLAIN" | "SHOW" | "TABLE" | "DESCRIBE" => Kind::Query,
        "SET" if CLIENT_SETTINGS.contains(&word(1)) => Kind::Setting,
        "SET" | "RESET" => Kind::EngineSetting,
        "BEGIN" | "START" => Kind::BeginTransaction,
        "COMMIT" | "END" => Kind::EndTransaction("COMMIT".to_owned()),
        "ROLLBACK" | "ABORT" => Kind::EndTransaction("ROLLBACK".to_owned()),
        "CREATE" | "DROP" | "ALTER" | "REFRESH" => {
            // The verb and its object: `CREATE TABLE`, `DROP MATERIALIZED VIEW`, ...
            let object: Vec<&str> = words[1..]
                .iter()
                .map(String::as_str)
                .filter(|w| {
                    !matches!(
                        *w,
                        "OR" | "REPLACE" | "EXTERNAL" | "TEMP" | "TEMPORARY" | "UNLOGGED"
                    )
                })
                .take_while(|w| {
                    matches!(
                        *w,
                        "MATERIALIZED"
                            | "TABLE"
                            | "VIEW"
                            | "SCHEMA"
                            | "DATABASE"
                            | "FUNCTION"
                            | "INDEX"
                    )
                })
                .collect();
            let object = match object.as_slice() {
                ["MATERIALIZED", "VIEW", ..] => "MATERIALIZED VIEW",
                [first, ..] => *first,
                [] => "",
            };
            let verb = format!("{} {object}", word(0)).trim_end().to_owned();
            if verb == "DROP TABLE" {
                return Kind::DropTable;
            }
            Kind::Command(verb)
        }
        other => Kind::Command(other.to_owned()),
    }
}

/// Whether the parameters of a command are typed by planning it at Parse: the DML
/// DataFusion plans (`MERGE` and `CREATE TABLE` the engine plans itself, at run).
fn typed_by_plan(kind: &Kind) -> bool {
    matches!(kind, Kind::Command(verb) if matches!(verb.as_str(), "INSERT" | "UPDATE" | "DELETE"))
}

/// Whether the engine reads a command itself rather than planning it with DataFusion:
/// `MERGE` and the materialized view commands.
fn read_by_engine(verb: &str) -> bool {
    verb == "MERGE" || verb.starts_with("REFRESH") || verb.ends_with("MATERIALIZED VIEW")
}

/// The rows a command changed: the `count` the engine answers DML with.
fn affected_rows(result: &QueryResult) -> usize {
    let schema = result.schema();
    if schema.fields().len() == 1 && schema.field(0).name() == "count" {
        let count = result
            .batches()
            .iter()
            .find(|b| b.num_rows() > 0)
            .and_then(|b| {
                arrow::compute::cast(b.column(0), &DataType::UInt64)
                    .ok()
                    .filter(|c| c.is_valid(0))
                    .map(|c| c.as_primitive::<UInt64Type>().value(0))
            });
        if let Some(n) = count {
            return usize::try_from(n).unwrap_or(usize::MAX);
        }
    }
    0
}

/// Postgres's command tag for `kind` after it ran.
fn command_tag(verb: &str, sql: &str, result: &QueryResult) -> Tag {
    let rows = affected_rows(result);
    match verb {
        "INSERT" => Tag::new("INSERT").with_oid(0).with_rows(rows),
        "UPDATE" | "DELETE" | "MERGE" => Tag::new(verb).with_rows(rows),
        // `CREATE TABLE ... AS SELECT` reports the rows it wrote, as Postgres does.
        "CREATE TABLE" if top_level_words(sql).iter().any(|w| w == "AS") => {
            Tag::new("SELECT").with_rows(rows)
        }
        "TRUNCATE" => Tag::new("TRUNCATE TABLE"),
        other => Tag::new(other),
    }
}

fn result_format(format: &Format, i: usize) -> FieldFormat {
    match format {
        Format::UnifiedText => FieldFormat::Text,
        Format::UnifiedBinary => FieldFormat::Binary,
        Format::Individual(codes) => codes
            .get(i)
            .map_or(FieldFormat::Text, |c| FieldFormat::from(*c)),
    }
}

/// The rows of `batches` as data rows, encoded as they are sent.
fn row_stream(
    fields: Arc<Vec<FieldInfo>>,
    batches: Vec<RecordBatch>,
) -> impl futures::Stream<Item = PgWireResult<DataRow>> + Send + 'static {
    let mut encoder = DataRowEncoder::new(fields.clone());
    let rows = batches.into_iter().flat_map(|batch| {
        let columns: Arc<Result<Vec<ArrayRef>, Error>> =
            Arc::new(batch.columns().iter().map(types::prepare).collect());
        (0..batch.num_rows()).map(move |row| (columns.clone(), row))
    });
    stream::iter(rows.map(move |(columns, row)| {
        let columns = columns.as_ref().as_ref().map_err(pg_error)?;
        types::encode_row(&mut encoder, &fields, columns, row).map_err(|e| pg_error(&e))?;
        Ok(encoder.take_row())
    }))
}

/// A query result as a pgwire response, each column in the client's format.
fn query_response(
    result: &QueryResult,
    format: impl Fn(usize) -> FieldFormat,
) -> Result<QueryResponse, Error> {
    let fields = Arc::new(types::fields(result.schema(), format)?);
    Ok(QueryResponse::new(
        fields.clone(),
        row_stream(fields, result.batches().to_vec()),
    ))
}

/// The handler of every session of one server: the engine is shared.
#[derive(Debug, Clone)]
pub(crate) struct Statements {
    engine: QueryEngine,
    parser: Arc<Parser>,
}

impl Statements {
    pub(crate) fn new(engine: QueryEngine) -> Self {
        Statements {
            parser: Arc::new(Parser {
                engine: engine.clone(),
            }),
            engine,
        }
    }

    /// Runs one statement of a simple query.
    async fn run_simple(&self, sql: &str) -> Result<Response, Error> {
        match classify(sql) {
            Kind::Query => {
                let result = sql_seeing_new_tables(&self.engine, sql).await?;
                Ok(Response::Query(query_response(&result, |_| {
                    FieldFormat::Text
                })?))
            }
            Kind::Command(verb) => {
                let result = sql_seeing_new_tables(&self.engine, sql).await?;
                Ok(Response::Execution(command_tag(&verb, sql, &result)))
            }
            Kind::Setting => Ok(Response::Execution(Tag::new("SET"))),
            Kind::EndTransaction(tag) => Ok(Response::Execution(Tag::new(&tag))),
            Kind::BeginTransaction => Err(no_transactions()),
            Kind::EngineSetting => Err(no_engine_settings()),
            Kind::DropTable => Err(no_drop_table()),
        }
    }
}

/// Whether `e` may be about a table that appeared in the engine's catalog after the
/// server started (another process created it: a statement finds no table, or a
/// `CREATE TABLE` finds one) and new tables are registered from the catalog.
async fn found_new_tables(engine: &QueryEngine, e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::TableNotFound | ErrorKind::AlreadyExists
    ) && engine.catalog().is_some()
        && engine
            .register_catalog_tables()
            .await
            .is_ok_and(|new| !new.is_empty())
}

/// Runs `sql`; when it failed for a table new in the catalog, runs it once more, with
/// the table registered. A statement that failed so wrote nothing.
async fn sql_seeing_new_tables(engine: &QueryEngine, sql: &str) -> Result<QueryResult, Error> {
    match engine.sql(sql).await {
        Err(e) if found_new_tables(engine, &e).await => engine.sql(sql).await,
        other => other,
    }
}

/// Plans `sql` as [`sql_seeing_new_tables`] runs it.
async fn prepare_seeing_new_tables(
    engine: &QueryEngine,
    sql: &str,
) -> Result<PreparedQuery, Error> {
    match engine.prepare(sql).await {
        Err(e) if found_new_tables(engine, &e).await => engine.prepare(sql).await,
        other => other,
    }
}

fn no_transactions() -> Error {
    Error::new(
        ErrorKind::Unsupported,
        "transactions are not supported: each statement commits on its own",
    )
}

fn no_drop_table() -> Error {
    Error::new(
        ErrorKind::Unsupported,
        "DROP TABLE is not supported: a table's files stay where the table catalog keeps \
         them (remove its directory with the server stopped)",
    )
}

fn no_engine_settings() -> Error {
    Error::new(
        ErrorKind::Unsupported,
        "SET of an engine option is not supported: the engine is shared by every session",
    )
}

#[async_trait]
impl SimpleQueryHandler for Statements {
    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut out = Vec::new();
        // Like Postgres: the statements run in order and the first error ends the string.
        for sql in split_statements(query) {
            match self.run_simple(sql).await {
                Ok(response) => out.push(response),
                Err(e) => {
                    out.push(Response::Error(Box::new(error_info(&e))));
                    break;
                }
            }
        }
        if out.is_empty() {
            out.push(Response::EmptyQuery);
        }
        Ok(out)
    }
}

/// A statement of the extended protocol, as parsed.
#[derive(Debug, Clone)]
pub(crate) struct Statement {
    sql: String,
    kind: Kind,
    /// Planned once: a query, with its parameters' and rows' types.
    prepared: Option<PreparedQuery>,
    schema: Option<SchemaRef>,
    /// Types the plan fixes for `$1`, `$2`, ...
    parameter_types: Vec<Option<DataType>>,
    /// Parameters a command (run as text with literals) uses.
    parameter_count: usize,
}

/// Parses and plans the statements of the extended protocol.
#[derive(Debug)]
pub(crate) struct Parser {
    engine: QueryEngine,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Statement;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let statements = split_statements(sql);
        let sql = match statements.as_slice() {
            [] => return Ok(None),
            [one] => *one,
            _ => {
                return Err(pg_refusal(
                    "42601",
                    "cannot insert multiple commands into a prepared statement",
                ));
            }
        };
        let kind = classify(sql);
        let mut statement = Statement {
            sql: sql.to_owned(),
            kind: kind.clone(),
            prepared: None,
            schema: None,
            parameter_types: Vec::new(),
            parameter_count: parameter_count(sql),
        };
        if kind == Kind::Query {
            // Errors (syntax, a missing table or column) are reported at Parse, as
            // Postgres does.
            let prepared = prepare_seeing_new_tables(&self.engine, sql)
                .await
                .map_err(|e| pg_error(&e))?;
            statement.parameter_types = prepared.parameter_types().map_err(|e| pg_error(&e))?;
            statement.schema = Some(prepared.schema());
            statement.prepared = Some(prepared);
        } else if let Kind::Command(verb) = &kind {
            // Commands still run as text at Execute, with their parameters written in
            // as literals; they are planned here for their parameters' types (DML: the
            // column a value goes to or is compared with) and to report errors at
            // Parse, as Postgres does: every error of DML, syntax errors of the rest.
            // Statements the engine reads itself are left to Execute.
            if !read_by_engine(verb) {
                match prepare_seeing_new_tables(&self.engine, sql).await {
                    Ok(planned) if typed_by_plan(&kind) => {
                        statement.parameter_types =
                            planned.parameter_types().map_err(|e| pg_error(&e))?;
                    }
                    Ok(_) => {}
                    Err(e) if typed_by_plan(&kind) || sqlstate(&e) == "42601" => {
                        return Err(pg_error(&e));
                    }
                    Err(_) => {}
                }
            }
        }
        Ok(Some(statement))
    }

    fn get_parameter_types(&self, statement: &Statement) -> PgWireResult<Vec<Type>> {
        let n = statement
            .parameter_types
            .len()
            .max(statement.parameter_count);
        Ok((0..n)
            .map(|i| {
                statement
                    .parameter_types
                    .get(i)
                    .cloned()
                    .flatten()
                    .and_then(|t| types::pg_type(&t))
                    .map_or(Type::TEXT, |(t, _)| t)
            })
            .collect())
    }

    fn get_result_schema(
        &self,
        statement: &Statement,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match &statement.schema {
            Some(schema) => {
                let text = Format::UnifiedText;
                let format = format.unwrap_or(&text);
                types::fields(schema, |i| result_format(format, i)).map_err(|e| pg_error(&e))
            }
            None => Ok(Vec::new()),
        }
    }
}

/// The parameters of `portal` as values, typed by the plan where it fixes a type, by
/// the client's declared type otherwise.
fn bound_parameters(portal: &Portal<Statement>) -> Result<Vec<Scalar>, Error> {
    let statement = &portal.statement.statement;
    let declared = &portal.statement.parameter_types;
    portal
        .parameters
        .iter()
        .enumerate()
        .map(|(i, value)| {
            let target = statement.parameter_types.get(i).cloned().flatten();
            // A client that declared no type encodes the value as the type the server
            // described for it (the plan's).
            let ty = declared
                .get(i)
                .cloned()
                .flatten()
                .filter(|t| *t != Type::UNKNOWN)
                .or_else(|| target.as_ref().and_then(types::pg_type).map(|(t, _)| t))
                .unwrap_or(Type::UNKNOWN);
            let binary = matches!(
                result_format(&portal.parameter_format, i),
                FieldFormat::Binary
            );
            types::parameter(value.as_deref(), binary, &ty, target.as_ref())
                .map_err(|e| e.prefixed(format!("parameter ${}", i + 1)))
        })
        .collect()
}

#[async_trait]
impl ExtendedQueryHandler for Statements {
    type Statement = Statement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        target: &StoredStatement<Statement>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let server = self.parser.get_parameter_types(&target.statement)?;
        let n = server.len().max(target.parameter_types.len());
        let parameters = (0..n)
            .map(|i| {
                target
                    .parameter_types
                    .get(i)
                    .cloned()
                    .flatten()
                    .or_else(|| server.get(i).cloned())
                    .unwrap_or(Type::TEXT)
            })
            .collect();
        // A statement is described before its result formats are bound: text.
        let fields = self.parser.get_result_schema(&target.statement, None)?;
        Ok(DescribeStatementResponse::new(parameters, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Statement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let fields = self.parser.get_result_schema(
            &portal.statement.statement,
            Some(&portal.result_column_format),
        )?;
        Ok(DescribePortalResponse::new(fields))
    }

    async fn do_query<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.execute(portal).await.map_err(|e| pg_error(&e))
    }
}

impl Statements {
    /// Runs a bound statement of the extended protocol.
    async fn execute(&self, portal: &Portal<Statement>) -> Result<Response, Error> {
        let statement = &portal.statement.statement;
        let params = bound_parameters(portal)?;
        match (&statement.kind, &statement.prepared) {
            (Kind::Query, Some(prepared)) => {
                let result = prepared.execute(&params).await?;
                let format = &portal.result_column_format;
                Ok(Response::Query(query_response(&result, |i| {
                    result_format(format, i)
                })?))
            }
            (Kind::Setting, _) => Ok(Response::Execution(Tag::new("SET"))),
            (Kind::EndTransaction(tag), _) => Ok(Response::Execution(Tag::new(tag))),
            (Kind::BeginTransaction, _) => Err(no_transactions()),
            (Kind::EngineSetting, _) => Err(no_engine_settings()),
            (Kind::DropTable, _) => Err(no_drop_table()),
            (kind, _) => {
                // Commands are not planned ahead: their parameters become literals.
                let sql = bind_literals(&statement.sql, &params)?;
                let result = sql_seeing_new_tables(&self.engine, &sql).await?;
                let verb = match kind {
                    Kind::Command(verb) => verb.as_str(),
                    _ => "SELECT",
                };
                Ok(Response::Execution(command_tag(verb, &sql, &result)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_classified_by_their_leading_keywords() {
        assert_eq!(classify("  select 1"), Kind::Query);
        assert_eq!(classify("(SELECT 1) UNION (SELECT 2)"), Kind::Query);
        assert_eq!(
            classify("insert into t values (1)"),
            Kind::Command("INSERT".into())
        );
        assert_eq!(
            classify("CREATE OR REPLACE VIEW v AS SELECT 1"),
            Kind::Command("CREATE VIEW".into())
        );
        assert_eq!(
            classify("drop materialized view v"),
            Kind::Command("DROP MATERIALIZED VIEW".into())
        );
        assert_eq!(classify("SET extra_float_digits = 3"), Kind::Setting);
        assert_eq!(
            classify("SET datafusion.execution.batch_size = 1"),
            Kind::EngineSetting
        );
        assert_eq!(classify("begin"), Kind::BeginTransaction);
        assert_eq!(classify("DROP TABLE IF EXISTS t"), Kind::DropTable);
        assert_eq!(classify("drop view v"), Kind::Command("DROP VIEW".into()));
        assert_eq!(
            classify("merge into t using s on t.a = s.a when matched then delete"),
            Kind::Command("MERGE".into())
        );
        assert_eq!(classify("truncate t"), Kind::Command("TRUNCATE".into()));
    }
}
