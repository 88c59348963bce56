//! The walk over parsed statements that fills an [`Analysis`]: every statement (nested
//! ones too, which the parser's visitor reaches inside CTEs, subqueries, `EXPLAIN` and
//! `PREPARE`), every relation, every function call.

use sqlparser::ast::{
    CopySource, CopyTarget, Delete, Expr, Grant, GrantObjects, ObjectName, ObjectNamePart, Query, Revoke, Select,
    SetExpr, Statement, Update,
};

use super::always_true::always_true;
use super::{Analysis, Effect, Kind, Table};

pub(super) fn analyze_statements(statements: &[Statement]) -> Analysis {
    let mut walk = Walk { analysis: Analysis::default() };
    for statement in statements {
        super::visit::walk(statement, &mut walk);
    }
    walk.analysis
}

struct Walk {
    analysis: Analysis,
}

impl Walk {
    fn note(&mut self, kind: Kind, effect: Effect) {
        self.analysis.kinds.insert(kind);
        self.analysis.effects.insert(effect);
    }

    fn table(&mut self, name: &ObjectName) {
        self.table_of(name.0.iter().map(|part| match part {
            ObjectNamePart::Identifier(ident) => ident.value.to_lowercase(),
            // A name computed by a function (`IDENTIFIER('t')`): not knowable here, so it
            // names no table a rule could list, and the statement stays as it is.
            ObjectNamePart::Function(_) => String::from("?"),
        }));
    }

    /// Records the table named by lower-cased identifiers (`[catalog.]schema.table`).
    fn table_of(&mut self, mut idents: impl DoubleEndedIterator<Item = String>) {
        let Some(last) = idents.next_back() else { return };
        let table = Table { schema: idents.next_back(), name: last };
        if !self.analysis.tables.contains(&table) {
            self.analysis.tables.push(table);
        }
    }
}

impl super::visit::Hooks for Walk {
    fn statement(&mut self, statement: &Statement) {
        let (kind, effect) = kind_and_effect(statement);
        self.note(kind, effect);
        match statement {
            Statement::Update(Update { selection, .. }) | Statement::Delete(Delete { selection, .. })
                if selection.as_ref().is_none_or(always_true) =>
            {
                self.analysis.unbounded = true;
            }
            // The visitor does not treat dropped or copied tables as relations.
            Statement::Drop { names, .. } => names.iter().for_each(|n| self.table(n)),
            Statement::Grant(Grant { objects: Some(objects), .. })
            | Statement::Revoke(Revoke { objects: Some(objects), .. }) => {
                if let GrantObjects::Tables(names) | GrantObjects::Views(names) = objects {
                    names.iter().for_each(|n| self.table(n));
                }
            }
            Statement::Copy { source: CopySource::Table { table_name, .. }, .. } => self.table(table_name),
            _ => {}
        }
    }

    /// Every query reads, wherever it sits: `INSERT … SELECT`, a subquery in a `WHERE`;
    /// only the `VALUES` list of an `INSERT` (a query to the parser) reads nothing.
    fn query(&mut self, query: &Query) {
        if !matches!(*query.body, SetExpr::Values(_)) {
            self.note(Kind::Select, Effect::Read);
        }
    }

    fn select(&mut self, select: &Select) {
        // `SELECT … INTO t` creates and fills a table (PostgreSQL, SQL Server).
        // A target that is not a table name (a MySQL `@variable`, a file) is admin: what it
        // reaches lies outside the tables a rule can name.
        for target in select.into.iter().flat_map(|into| &into.targets) {
            let idents = match target {
                Expr::Identifier(ident) => std::slice::from_ref(ident),
                Expr::CompoundIdentifier(idents) => idents.as_slice(),
                _ => {
                    self.note(Kind::Other, Effect::Admin);
                    continue;
                }
            };
            self.note(Kind::Create, Effect::Ddl);
            self.table_of(idents.iter().map(|i| i.value.to_lowercase()));
        }
    }

    fn relation(&mut self, relation: &ObjectName) {
        self.table(relation);
    }

    fn expr(&mut self, expr: &Expr) {
        if let Expr::Function(function) = expr {
            if let Some(ObjectNamePart::Identifier(name)) = function.name.0.last() {
                if let Some(effect) = function_effect(&name.value.to_lowercase()) {
                    self.analysis.effects.insert(effect);
                }
            }
        }
    }
}

/// Functions that act beyond reading rows, by their unqualified lower-case name. Reading
/// server files, running programs, loading code or signalling other sessions is `admin`;
/// advancing a sequence is a `write`. Any dialect: a name means the same everywhere.
fn function_effect(name: &str) -> Option<Effect> {
    const ADMIN: &[&str] = &[
        // SQLite
        "load_extension",
        "writefile",
        "readfile",
        "edit",
        // PostgreSQL
        "pg_read_file",
        "pg_read_binary_file",
        "pg_ls_dir",
        "pg_stat_file",
        "lo_import",
        "lo_export",
        "lo_from_bytea",
        "lo_put",
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_promote",
        "set_config",
        "dblink",
        "dblink_exec",
        "dblink_connect",
        "query_to_xml",
        "pg_sleep",
        // MySQL
        "load_file",
        "sys_exec",
        "sys_eval",
        "sleep",
        "benchmark",
        // SQL Server
        "xp_cmdshell",
        "openrowset",
        "opendatasource",
        "openquery",
        // DuckDB
        "read_csv",
        "read_csv_auto",
        "read_parquet",
        "read_json",
        "read_text",
        "read_blob",
    ];
    const WRITE: &[&str] = &["nextval", "setval", "lo_create", "lo_unlink"];
    if ADMIN.contains(&name) {
        Some(Effect::Admin)
    } else if WRITE.contains(&name) {
        Some(Effect::Write)
    } else {
        None
    }
}

/// A statement's own kind and effect; what it contains is visited separately.
fn kind_and_effect(statement: &Statement) -> (Kind, Effect) {
    use Effect::{Admin, Ddl, Read, Write};
    match statement {
        Statement::Query(_) => (Kind::Select, Read),
        Statement::Insert(_) => (Kind::Insert, Write),
        Statement::Update(_) => (Kind::Update, Write),
        Statement::Delete(_) => (Kind::Delete, Write),
        Statement::Merge(_) => (Kind::Merge, Write),
        Statement::Copy { to, target, .. } => match (to, target) {
            (false, CopyTarget::Stdin) => (Kind::Copy, Write),
            (true, CopyTarget::Stdout) => (Kind::Copy, Read),
            // Files and programs on the database server.
            _ => (Kind::Copy, Admin),
        },
        Statement::CreateExtension(_) => (Kind::Create, Admin),
        Statement::CreateRole(_) | Statement::CreateUser(_) | Statement::CreateSecret { .. } => (Kind::Create, Admin),
        Statement::CreateServer(_)
        | Statement::CreateForeignDataWrapper(_)
        | Statement::CreateUserMapping(_)
        | Statement::CreateConnector(_) => (Kind::Create, Admin),
        Statement::CreateView(_)
        | Statement::CreateTable(_)
        | Statement::CreateVirtualTable { .. }
        | Statement::CreateIndex(_)
        | Statement::CreateForeignTable(_)
        | Statement::CreatePolicy(_)
        | Statement::CreateRule(_)
        | Statement::CreateOperator(_)
        | Statement::CreateOperatorFamily(_)
        | Statement::CreateOperatorClass(_)
        | Statement::CreateTextSearch(_)
        | Statement::CreateAggregate(_)
        | Statement::CreateCollation(_)
        | Statement::CreateSchema { .. }
        | Statement::CreateDatabase { .. }
        | Statement::CreateFunction(_)
        | Statement::CreateTrigger(_)
        | Statement::CreateProcedure { .. }
        | Statement::CreateMacro { .. }
        | Statement::CreateStage { .. }
        | Statement::CreateFileFormat { .. }
        | Statement::CreateWarehouse(_)
        | Statement::CreateSequence { .. }
        | Statement::CreateDomain(_)
        | Statement::CreateType { .. } => (Kind::Create, Ddl),
        Statement::AlterRole { .. } | Statement::AlterUser(_) | Statement::AlterSession { .. } => (Kind::Alter, Admin),
        Statement::AlterTable(_)
        | Statement::AlterSchema(_)
        | Statement::AlterIndex { .. }
        | Statement::AlterView(_)
        | Statement::AlterFunction(_)
        | Statement::AlterType(_)
        | Statement::AlterCollation(_)
        | Statement::AlterOperator(_)
        | Statement::AlterOperatorFamily(_)
        | Statement::AlterOperatorClass(_)
        | Statement::AlterTextSearch(_)
        | Statement::AlterPolicy(_)
        | Statement::AlterTrigger(_)
        | Statement::AlterConnector { .. }
        | Statement::RenameTable(_) => (Kind::Alter, Ddl),
        Statement::DropSecret { .. } | Statement::DropConnector { .. } | Statement::DropExtension(_) => {
            (Kind::Drop, Admin)
        }
        Statement::Drop { .. }
        | Statement::DropFunction(_)
        | Statement::DropDomain(_)
        | Statement::DropProcedure { .. }
        | Statement::DropPolicy(_)
        | Statement::DropRule(_)
        | Statement::DropOperator(_)
        | Statement::DropOperatorFamily(_)
        | Statement::DropOperatorClass(_)
        | Statement::DropTrigger(_) => (Kind::Drop, Ddl),
        Statement::Truncate(_) => (Kind::Truncate, Ddl),
        Statement::Comment { .. } => (Kind::Comment, Ddl),
        Statement::Grant(_) | Statement::GrantRole(_) | Statement::AlterDefaultPrivileges(_) => (Kind::Grant, Admin),
        Statement::Revoke(_) | Statement::RevokeRole(_) | Statement::Deny(_) => (Kind::Revoke, Admin),
        Statement::AttachDatabase { .. } | Statement::AttachDuckDBDatabase { .. } => (Kind::Attach, Admin),
        Statement::DetachDuckDBDatabase { .. } => (Kind::Detach, Admin),
        Statement::Pragma { .. } => (Kind::Pragma, Admin),
        Statement::Set(_) | Statement::Reset(_) => (Kind::Set, Admin),
        Statement::Load { .. } | Statement::LoadData { .. } | Statement::Install { .. } => (Kind::Load, Admin),
        Statement::Explain { .. } | Statement::ExplainTable { .. } => (Kind::Explain, Read),
        Statement::ShowFunctions { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowProcessList { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowCharset(_)
        | Statement::ShowObjects(_)
        | Statement::ShowTables { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowCollation { .. } => (Kind::Show, Read),
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. } => (Kind::Transaction, Read),
        // A procedure or prepared statement could do anything.
        Statement::Call(_) => (Kind::Call, Admin),
        Statement::Execute { .. } => (Kind::Execute, Admin),
        // What is prepared is visited as a nested statement; preparing alone runs nothing.
        Statement::Prepare { .. } | Statement::Deallocate { .. } => (Kind::Prepare, Read),
        Statement::Use(_) => (Kind::Use, Admin),
        Statement::Lock(_) | Statement::LockTables { .. } | Statement::UnlockTables => (Kind::Lock, Admin),
        Statement::Kill { .. } => (Kind::Kill, Admin),
        Statement::Vacuum(_) | Statement::Analyze(_) | Statement::OptimizeTable { .. } => (Kind::Maintenance, Admin),
        Statement::Declare { .. } | Statement::Fetch { .. } | Statement::Close { .. } | Statement::Open(_) => {
            (Kind::Cursor, Read)
        }
        _ => (Kind::Other, Admin),
    }
}
