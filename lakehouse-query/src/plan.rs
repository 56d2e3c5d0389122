//! Planning: SQL text to a logical plan (a missing table is named before DataFusion
//! plans), what a plan reads and whether its result may be cached, and scans pinned to
//! the versions a query reads.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::TableReference;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Query, Statement};
use lakehouse_core::{Error, ErrorKind, Result, Version};

use crate::dml::partitioned_by;
use crate::engine::QueryEngine;
use crate::error::DfResultExt;
use crate::scan::SourceTable;

/// Plans one SQL statement. A table the statement reads that is not registered fails
/// with [`ErrorKind::TableNotFound`] naming it.
pub(crate) async fn plan_sql(state: &SessionState, sql: &str) -> Result<LogicalPlan> {
    let (plan, partition_by) = plan_statement(state, sql).await?;
    if !partition_by.is_empty() {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "CREATE TABLE ... PARTITIONED BY runs through QueryEngine::sql or query only",
        ));
    }
    Ok(plan)
}

/// Plans one SQL statement as [`plan_sql`] does, and returns the partition columns of
/// a `CREATE TABLE ... PARTITIONED BY (...)`, which the engine handles itself.
pub(crate) async fn plan_statement(
    state: &SessionState,
    sql: &str,
) -> Result<(LogicalPlan, Vec<String>)> {
    let dialect = state.config().options().sql_parser.dialect;
    let mut statement = state.sql_to_statement(sql, &dialect).map_df()?;
    check_tables(state, &statement)?;
    let partition_by = partitioned_by(&mut statement)?;
    let plan = state.statement_to_plan(statement).await.map_df()?;
    Ok((plan, partition_by))
}

/// Checks that the tables `statement` reads or writes exist. The view `CREATE VIEW v
/// AS ...` or the table `CREATE TABLE t AS ...` defines need not exist yet.
fn check_tables(state: &SessionState, statement: &DfStatement) -> Result<()> {
    let inner = |query: &Query| {
        let read = Statement::Query(Box::new(query.clone()));
        check_references(state, &DfStatement::Statement(Box::new(read)))
    };
    match statement {
        DfStatement::Explain(explain) => check_tables(state, &explain.statement),
        DfStatement::Statement(s) => match s.as_ref() {
            Statement::Query(_) | Statement::ExplainTable { .. } => {
                check_references(state, statement)
            }
            Statement::CreateView(view) => inner(&view.query),
            Statement::CreateTable(table) => table.query.as_deref().map_or(Ok(()), inner),
            Statement::Insert(_)
            | Statement::Delete(_)
            | Statement::Update(_)
            | Statement::Truncate(_) => check_references(state, statement),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Checks that every table `statement` names exists. DataFusion's resolver leaves out
/// the names of common table expressions; views are tables in the catalog.
fn check_references(state: &SessionState, statement: &DfStatement) -> Result<()> {
    for reference in state.resolve_table_references(statement).map_df()? {
        if !table_exists(state, &reference) {
            let name = reference.to_string();
            return Err(
                Error::new(ErrorKind::TableNotFound, format!("no table named {name:?}"))
                    .with_table(name),
            );
        }
    }
    Ok(())
}

fn table_exists(state: &SessionState, reference: &TableReference) -> bool {
    let in_catalog = state
        .schema_for_ref(reference.clone())
        .is_ok_and(|schema| schema.table_exist(reference.table()));
    // `FROM generate_series(1, 3)` names a table function, not a table.
    let function =
        reference.schema().is_none() && state.table_functions().contains_key(reference.table());
    in_catalog || function
}

/// A planned SQL text, kept by the plan cache.
#[derive(Debug)]
pub(crate) struct Planned {
    pub(crate) plan: LogicalPlan,
    /// The result cache's key for the plan.
    pub(crate) key: Arc<str>,
    /// The tables the plan reads, sorted.
    pub(crate) tables: Vec<Arc<str>>,
    /// Whether the result may be cached.
    pub(crate) cacheable: bool,
    /// Calls a volatile function: the optimizer folds `now()` into a constant, so such
    /// plans are planned again for every run.
    pub(crate) volatile: bool,
    /// DDL, DML or another statement that is run rather than queried.
    pub(crate) command: bool,
    /// The partition columns of a `CREATE TABLE ... PARTITIONED BY`.
    pub(crate) partition_by: Vec<String>,
    /// The catalog epoch planning started in: results are cached only while no table
    /// was registered or removed since, so that the plan scans the tables the cache
    /// key names.
    pub(crate) epoch: u64,
}

impl QueryEngine {
    /// Optimizes a logical plan, made in catalog `epoch`, and works out what it reads
    /// and whether its result may be cached.
    pub(crate) fn analyze(
        &self,
        state: &SessionState,
        plan: LogicalPlan,
        epoch: u64,
    ) -> Result<Planned> {
        let command = matches!(
            plan,
            LogicalPlan::Ddl(_)
                | LogicalPlan::Dml(_)
                | LogicalPlan::Statement(_)
                | LogicalPlan::Copy(_)
                | LogicalPlan::DescribeTable(_)
        );
        if command {
            return Ok(Planned {
                key: Arc::from(""),
                plan,
                tables: Vec::new(),
                cacheable: false,
                volatile: false,
                command: true,
                partition_by: Vec::new(),
                epoch,
            });
        }
        let explain = matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_));
        let volatile = is_volatile(&plan)?;
        let optimized = state.optimize(&plan).map_df()?;
        let mut tables: Vec<Arc<str>> = Vec::new();
        optimized
            .apply_with_subqueries(|node| {
                if let LogicalPlan::TableScan(scan) = node {
                    let name: Arc<str> = Arc::from(scan.table_name.table());
                    if !tables.contains(&name) {
                        tables.push(name);
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
            .map_df()?;
        tables.sort();
        let versioned = self.all_versioned(&tables);
        let key: Arc<str> = Arc::from(optimized.display_indent_schema().to_string());
        Ok(Planned {
            plan: optimized,
            key,
            tables,
            cacheable: !explain && !volatile && versioned,
            volatile,
            command: false,
            partition_by: Vec::new(),
            epoch,
        })
    }
}

/// Whether a plan calls a function whose result may change between runs.
pub(crate) fn is_volatile(plan: &LogicalPlan) -> Result<bool> {
    let mut volatile = false;
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                let v = match e {
                    Expr::ScalarFunction(f) => f.func.signature().volatility,
                    Expr::ScalarVariable(..) => Volatility::Volatile,
                    _ => Volatility::Immutable,
                };
                if v != Volatility::Immutable {
                    volatile = true;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })?;
        Ok(if volatile {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })
    .map_df()?;
    Ok(volatile)
}

/// Replaces the scans of registered sources by scans pinned at `pins`, so that a query
/// reads one consistent version of each table.
pub(crate) fn pin_versions(
    plan: LogicalPlan,
    pins: &HashMap<&str, Version>,
) -> Result<LogicalPlan> {
    if pins.is_empty() {
        return Ok(plan);
    }
    let out = plan
        .transform_up_with_subqueries(|node| {
            let LogicalPlan::TableScan(mut scan) = node else {
                return Ok(Transformed::no(node));
            };
            let Some(v) = pins.get(scan.table_name.table()) else {
                return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
            };
            let provider = source_as_provider(&scan.source)?;
            let any: &dyn Any = provider.as_ref();
            if let Some(table) = any.downcast_ref::<SourceTable>() {
                scan.source = provider_as_source(Arc::new(table.pinned(*v)));
                Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
            } else {
                Ok(Transformed::no(LogicalPlan::TableScan(scan)))
            }
        })
        .map_df()?;
    Ok(out.data)
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    #[tokio::test]
    async fn names_the_missing_table_and_not_ctes_or_views() {
        // As the engine configures it.
        let ctx =
            SessionContext::new_with_config(SessionConfig::new().with_information_schema(true));
        ctx.sql("CREATE VIEW v AS SELECT 1 AS a")
            .await
            .expect("a view");
        let state = ctx.state();
        let e = plan_sql(&state, "SELECT * FROM nope")
            .await
            .expect_err("no such table");
        assert_eq!(e.kind(), ErrorKind::TableNotFound);
        assert_eq!(e.context().table.as_deref(), Some("nope"));
        let e = plan_sql(
            &state,
            "SELECT * FROM v JOIN (SELECT * FROM gone) g ON true",
        )
        .await
        .expect_err("a subquery reads a missing table");
        assert_eq!(e.context().table.as_deref(), Some("gone"));
        let e = plan_sql(&state, "CREATE VIEW w AS SELECT * FROM other.nope")
            .await
            .expect_err("a view over a missing table");
        assert_eq!(e.context().table.as_deref(), Some("other.nope"));
        for sql in [
            "WITH nope AS (SELECT 1 AS a) SELECT * FROM nope",
            "SELECT * FROM v",
            "EXPLAIN SELECT a FROM v",
            "SELECT * FROM generate_series(1, 3)",
            "SELECT * FROM information_schema.tables",
            "CREATE VIEW w AS SELECT * FROM v",
        ] {
            plan_sql(&state, sql).await.expect(sql);
        }
    }
}
