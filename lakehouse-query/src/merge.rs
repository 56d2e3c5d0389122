//! `MERGE INTO target USING source ON ... WHEN [NOT] MATCHED ...`: the statement is
//! translated here into a core [`MergeRequest`] and run by the target's
//! [`TableMutator::merge`], one commit.
//!
//! The source is any table or subquery DataFusion plans; it is read in full first. The
//! `ON` clause is split into its conjuncts: `target.column = <source expression>`
//! become the merge keys (the source side cast to the column's type), conjuncts over
//! target columns only that translate exactly become the target filter (both prune
//! the files the merge reads), and the rest is evaluated over each matched pair.
//! Conditions, `SET` values and `INSERT` values are DataFusion physical expressions
//! evaluated over the pairs of target and source rows (`INSERT` and `WHEN NOT
//! MATCHED` conditions over the source row alone).

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{Column, DFSchema};
use datafusion::execution::SessionState;
use datafusion::logical_expr::utils::split_conjunction_owned;
use datafusion::logical_expr::{BinaryExpr, Cast, Expr, ExprSchemable, Operator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::ExprWithAlias;
use datafusion::sql::sqlparser::ast::{
    self as sql, AssignmentTarget, MergeAction, MergeClauseKind, MergeInsertKind, ObjectName,
    TableFactor,
};
use lakehouse_core::{
    Error, ErrorKind, MergeAssignment, MergeFn, MergeOutcome, MergeRequest, MergeRows, Result,
    WritableTable,
};

use crate::dml::physical_expr;
use crate::engine::QueryEngine;
use crate::error::DfResultExt;
use crate::options::QueryOptions;
use crate::pushdown::to_predicate;
use crate::registry::normalize_name;
use crate::result::QueryResult;

/// Prefix of the columns the merge adds to the source for its computed keys.
const KEY_PREFIX: &str = "__lakehouse_merge_key_";

fn refuse(what: &str) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!("MERGE: {what} is not supported"),
    )
}

fn invalid(what: String) -> Error {
    Error::new(ErrorKind::InvalidSql, format!("MERGE: {what}"))
}

/// The last part of `name`, as the registry keys it (lower case).
fn last_name(name: &ObjectName) -> Result<String> {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .map(|i| i.value.to_ascii_lowercase())
        .ok_or_else(|| invalid(format!("cannot read the name {name}")))
}

/// The schema of `arrow` qualified by `qualifier`, every field nullable.
fn qualified(qualifier: Option<&str>, arrow: &Schema) -> Result<DFSchema> {
    let fields: Vec<Field> = arrow
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    let schema = Schema::new(fields);
    match qualifier {
        Some(q) => DFSchema::try_from_qualified_schema(q, &schema).map_df(),
        None => DFSchema::try_from(schema).map_df(),
    }
}

/// Whether a value of type `from` may be assigned to a column of type `to` (then it
/// is cast): the same type, a null, numbers to numbers, strings to strings, temporal
/// types among themselves.
fn assignable(from: &DataType, to: &DataType) -> bool {
    let string =
        |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    let temporal = |t: &DataType| t.is_temporal();
    from == to
        || from.is_null()
        || (from.is_numeric() && to.is_numeric())
        || (string(from) && string(to))
        || (temporal(from) && temporal(to))
}

/// A physical expression over batches of `schema`, as a [`MergeFn`]; `combine` builds
/// the batch from a pair of rows.
fn merge_fn(expr: Arc<dyn PhysicalExpr>, schema: SchemaRef, pairs: bool) -> MergeFn {
    Arc::new(move |rows: &MergeRows| {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        if pairs {
            columns.extend(rows.target.columns().iter().cloned());
        }
        columns.extend(rows.source.columns().iter().cloned());
        if columns.len() != schema.fields().len() {
            return Err(Error::new(
                ErrorKind::Conflict,
                "MERGE: the table's columns changed while the statement ran",
            ));
        }
        let batch = RecordBatch::try_new_with_options(
            schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows.num_rows())),
        )?;
        expr.evaluate(&batch)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_df()
    })
}

/// What the statement's expressions are planned against.
struct Scope<'a> {
    state: &'a SessionState,
    /// Target then source (and key) columns, for `ON` and `WHEN MATCHED`.
    pairs: DFSchema,
    /// Source (and key) columns, for `WHEN NOT MATCHED`.
    source: DFSchema,
}

impl Scope<'_> {
    fn logical(&self, expr: &sql::Expr, pairs: bool) -> Result<Expr> {
        let schema = if pairs { &self.pairs } else { &self.source };
        let with_alias = ExprWithAlias {
            expr: expr.clone(),
            alias: None,
        };
        self.state
            .create_logical_expr_from_sql_expr(with_alias, schema)
            .map_df()
    }

    fn physical(&self, expr: Expr, pairs: bool) -> Result<MergeFn> {
        let schema = if pairs { &self.pairs } else { &self.source };
        let physical = physical_expr(self.state, expr, schema).map_df()?;
        Ok(merge_fn(
            physical,
            Arc::new(schema.as_arrow().clone()),
            pairs,
        ))
    }

    /// A condition: a Boolean expression.
    fn condition(&self, expr: &sql::Expr, pairs: bool) -> Result<MergeFn> {
        let logical = self.logical(expr, pairs)?;
        let schema = if pairs { &self.pairs } else { &self.source };
        let t = logical.get_type(schema).map_df()?;
        if !matches!(t, DataType::Boolean | DataType::Null) {
            return Err(Error::new(
                ErrorKind::TypeMismatch,
                format!("MERGE: the condition {expr} is {t}, not a Boolean"),
            ));
        }
        self.physical(logical, pairs)
    }

    /// A value for `column` of type `to`, cast to it.
    fn value(&self, column: &str, to: &DataType, expr: &sql::Expr, pairs: bool) -> Result<MergeFn> {
        let logical = self.logical(expr, pairs)?;
        let schema = if pairs { &self.pairs } else { &self.source };
        let from = logical.get_type(schema).map_df()?;
        if !assignable(&from, to) {
            return Err(Error::new(
                ErrorKind::TypeMismatch,
                format!("MERGE: {expr} is {from} and cannot be assigned to column {column:?} of type {to}"),
            )
            .with_column(column));
        }
        let cast = if &from == to {
            logical
        } else {
            Expr::Cast(Cast::new(Box::new(logical), to.clone()))
        };
        self.physical(cast, pairs)
    }
}

/// The target column named by an assignment or an insert column list.
fn column_of(name: &ObjectName, target: &Schema) -> Result<(String, DataType)> {
    let column = last_name(name)?;
    let field = target
        .fields()
        .iter()
        .find(|f| f.name().eq_ignore_ascii_case(&column))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::ColumnNotFound,
                format!("MERGE: the table has no column {column:?}"),
            )
            .with_column(&column)
        })?;
    Ok((field.name().clone(), field.data_type().clone()))
}

/// The alias of a table factor, or its table name.
fn alias_of(factor: &TableFactor) -> Result<Option<String>> {
    Ok(match factor {
        TableFactor::Table { name, alias, .. } => Some(match alias {
            Some(a) => a.name.value.clone(),
            None => last_name(name)?,
        }),
        TableFactor::Derived { alias, .. } => alias.as_ref().map(|a| a.name.value.clone()),
        _ => None,
    })
}

/// The `MERGE` statement `sql` is, or `None` for any other statement.
pub(crate) fn parse_merge(engine: &QueryEngine, sql: &str) -> Result<Option<sql::Merge>> {
    let first = sql
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next();
    if !first.is_some_and(|w| w.eq_ignore_ascii_case("merge")) {
        return Ok(None);
    }
    // The session state is a copy of the engine's function registries and settings:
    // taken only for a statement that is a MERGE, never on the path of a query.
    let state = engine.state();
    let dialect = state.config().options().sql_parser.dialect;
    match state.sql_to_statement(sql, &dialect).map_df()? {
        DfStatement::Statement(s) => match *s {
            sql::Statement::Merge(m) => Ok(Some(m)),
            _ => Ok(None),
        },
        _ => Ok(None),
    }
}

impl QueryEngine {
    /// Runs a `MERGE` statement: one commit of the target table; the result is one
    /// row, `count`, the rows updated, deleted and inserted.
    pub(crate) async fn run_merge(
        &self,
        merge: &sql::Merge,
        options: &QueryOptions,
    ) -> Result<QueryResult> {
        if merge.output.is_some() {
            return Err(refuse("an OUTPUT clause"));
        }
        let TableFactor::Table {
            name, args: None, ..
        } = &merge.table
        else {
            return Err(refuse("a target that is not a table name"));
        };
        let table = last_name(name)?;
        let (target_schema, mutator) = self.merge_target(&table)?;
        let target_alias = alias_of(&merge.table)?;
        let source_alias = alias_of(&merge.source)?;
        let planned = self
            .plan_cached(&format!("SELECT * FROM {}", merge.source))
            .await?;
        let source = self.run_planned(&planned, options).await?;
        let request = self.merge_request(
            merge,
            &target_schema,
            target_alias.as_deref(),
            source_alias.as_deref(),
            source.schema.clone(),
            source.batches().to_vec(),
        )?;
        let outcome: MergeOutcome = self
            .guarded(async { mutator.merge(&request).await }, options)
            .await
            .map_err(|e| e.with_table(&table))?;
        let schema = Arc::new(Schema::new(vec![Field::new(
            "count",
            DataType::UInt64,
            false,
        )]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(UInt64Array::from(vec![outcome.rows_affected()]))],
        )?;
        Ok(QueryResult {
            schema,
            batches: Arc::new(vec![batch]),
            from_cache: false,
        })
    }

    fn merge_request(
        &self,
        merge: &sql::Merge,
        target: &SchemaRef,
        target_alias: Option<&str>,
        source_alias: Option<&str>,
        source_schema: SchemaRef,
        mut source: Vec<RecordBatch>,
    ) -> Result<MergeRequest> {
        let state = self.state();
        let target_df = qualified(target_alias, target)?;
        let source_df = qualified(source_alias, &source_schema)?;
        let pairs = target_df.join(&source_df).map_df()?;
        let scope0 = Scope {
            state: &state,
            pairs: pairs.clone(),
            source: source_df.clone(),
        };
        let on = scope0.logical(&merge.on, true)?;
        let n_target = target.fields().len();
        let side =
            |c: &Column| -> Result<bool> { Ok(pairs.index_of_column(c).map_df()? < n_target) };
        // Split ON: keys, target-only conjuncts, the rest.
        let mut keys: Vec<(String, Expr, DataType)> = Vec::new();
        let mut target_filter = Vec::new();
        let mut residual = Vec::new();
        for conjunct in split_conjunction_owned(on) {
            let columns = conjunct.column_refs();
            let mut on_target = false;
            let mut on_source = false;
            for c in &columns {
                if side(c)? {
                    on_target = true;
                } else {
                    on_source = true;
                }
            }
            if let Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Eq,
                right,
            }) = &conjunct
            {
                let key = match (left.as_ref(), right.as_ref()) {
                    (Expr::Column(c), other) | (other, Expr::Column(c))
                        if side(c)?
                            && !other.column_refs().is_empty()
                            && other.column_refs().iter().all(|o| !side(o).unwrap_or(true)) =>
                    {
                        Some((c.clone(), other.clone()))
                    }
                    _ => None,
                };
                if let Some((c, other)) = key {
                    let i = pairs.index_of_column(&c).map_df()?;
                    let field = target.field(i);
                    keys.push((field.name().clone(), other, field.data_type().clone()));
                    continue;
                }
            }
            if on_target
                && !on_source
                && let Some(p) =
                    strip_qualifiers(conjunct.clone()).and_then(|e| to_predicate(&e, target))
            {
                target_filter.push(p);
                continue;
            }
            residual.push(conjunct);
        }
        if keys.is_empty() {
            return Err(refuse(
                "an ON clause without an equality of a target column and a source expression",
            ));
        }
        // The source with a computed column per key, cast to the target column's type.
        let key_fields: Vec<Field> = keys
            .iter()
            .enumerate()
            .map(|(i, (_, _, t))| Field::new(format!("{KEY_PREFIX}{i}"), t.clone(), true))
            .collect();
        let key_fns = keys
            .iter()
            .map(|(_, e, t)| {
                let cast = Expr::Cast(Cast::new(Box::new(e.clone()), t.clone()));
                scope0.physical(cast, false)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut full_fields: Vec<Field> = source_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        full_fields.extend(key_fields.iter().cloned());
        let full_source = Arc::new(Schema::new(full_fields));
        for b in &mut source {
            let rows = MergeRows {
                target: RecordBatch::new_empty(Arc::new(Schema::empty())),
                source: b.clone(),
            };
            let mut columns = b.columns().to_vec();
            for f in &key_fns {
                columns.push(f(&rows)?);
            }
            *b = RecordBatch::try_new_with_options(
                full_source.clone(),
                columns,
                &RecordBatchOptions::new().with_row_count(Some(b.num_rows())),
            )?;
        }
        let keys_df = DFSchema::try_from(Schema::new(key_fields)).map_df()?;
        let source_df = source_df.join(&keys_df).map_df()?;
        let scope = Scope {
            state: &state,
            pairs: target_df.join(&source_df).map_df()?,
            source: source_df,
        };
        let mut request = MergeRequest::new(full_source, source);
        for (i, (column, _, _)) in keys.iter().enumerate() {
            request = request.on_key(column.clone(), format!("{KEY_PREFIX}{i}"));
        }
        for p in target_filter {
            request = request.on_target(p);
        }
        if let Some(rest) = residual.into_iter().reduce(Expr::and) {
            request = request.on_condition(scope.physical(rest, true)?);
        }
        for clause in &merge.clauses {
            let pairs = matches!(clause.clause_kind, MergeClauseKind::Matched);
            let condition = clause
                .predicate
                .as_ref()
                .map(|p| scope.condition(p, pairs))
                .transpose()?;
            match (&clause.clause_kind, &clause.action) {
                (MergeClauseKind::Matched, MergeAction::Update(update)) => {
                    if update.update_predicate.is_some() || update.delete_predicate.is_some() {
                        return Err(refuse("UPDATE ... WHERE / DELETE WHERE in a clause"));
                    }
                    let mut set = Vec::new();
                    for a in &update.assignments {
                        let AssignmentTarget::ColumnName(name) = &a.target else {
                            return Err(refuse("assigning a tuple of columns"));
                        };
                        let (column, t) = column_of(name, target)?;
                        let f = scope.value(&column, &t, &a.value, true)?;
                        set.push(MergeAssignment::computed(column, f));
                    }
                    request = request.when_matched_update(condition, set);
                }
                (MergeClauseKind::Matched, MergeAction::Delete { .. }) => {
                    request = request.when_matched_delete(condition);
                }
                (
                    MergeClauseKind::NotMatched | MergeClauseKind::NotMatchedByTarget,
                    MergeAction::Insert(insert),
                ) => {
                    if insert.insert_predicate.is_some() {
                        return Err(refuse("INSERT ... WHERE in a clause"));
                    }
                    let MergeInsertKind::Values(values) = &insert.kind else {
                        return Err(refuse("INSERT ROW"));
                    };
                    let [row] = values.rows.as_slice() else {
                        return Err(invalid("INSERT takes one row of VALUES".into()));
                    };
                    let columns: Vec<(String, DataType)> = if insert.columns.is_empty() {
                        target
                            .fields()
                            .iter()
                            .map(|f| (f.name().clone(), f.data_type().clone()))
                            .collect()
                    } else {
                        insert
                            .columns
                            .iter()
                            .map(|c| column_of(c, target))
                            .collect::<Result<_>>()?
                    };
                    if columns.len() != row.content.len() {
                        return Err(invalid(format!(
                            "INSERT names {} columns but gives {} values",
                            columns.len(),
                            row.content.len()
                        )));
                    }
                    let mut set = Vec::new();
                    for ((column, t), e) in columns.into_iter().zip(&row.content) {
                        let f = scope.value(&column, &t, e, false)?;
                        set.push(MergeAssignment::computed(column, f));
                    }
                    request = request.when_not_matched_insert(condition, set);
                }
                (MergeClauseKind::NotMatchedBySource, _) => {
                    return Err(refuse("WHEN NOT MATCHED BY SOURCE"));
                }
                (kind, action) => {
                    return Err(invalid(format!("WHEN {kind} cannot {action}")));
                }
            }
        }
        Ok(request)
    }
}

/// `expr` with its columns' qualifiers removed (for a target-only conjunct, whose
/// columns are then the table's).
fn strip_qualifiers(expr: Expr) -> Option<Expr> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    expr.transform(|e| {
        Ok(match e {
            Expr::Column(c) if c.relation.is_some() => {
                Transformed::yes(Expr::Column(Column::new_unqualified(c.name)))
            }
            other => Transformed::no(other),
        })
    })
    .map(|t| t.data)
    .ok()
}

impl QueryEngine {
    /// The target table's schema and mutator: a table registered writable.
    fn merge_target(&self, name: &str) -> Result<(SchemaRef, Arc<dyn WritableTable>)> {
        let table = self.writable(&normalize_name(name)?)?;
        Ok((table.schema(), table))
    }
}
