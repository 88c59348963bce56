//! Column lineage: which result columns of a statement carry a sensitive column's value
//! as it is stored, which compute something from one, and where sensitive columns steer
//! which rows come back.
//!
//! Why: pattern detectors cannot win against an agent that chooses the query. It can
//! return `substr(card,1,8)` and `substr(card,9,8)`, `hex(ssn)`, or `email || '—'`, and
//! no detector sees a card, an SSN or an e-mail address in what comes back. From the
//! parsed statement, though, the filter knows that the result column `a` is computed from
//! `customers.card`, whatever it is called and however deep in subqueries and CTEs the
//! computation sits. A value passed through unchanged is masked by its result column's
//! name; anything computed from one cannot be masked and is refused, or approved.
//!
//! The walk over-approximates on purpose: an unqualified name is looked up in every
//! relation in scope (outer queries too), a relation it cannot see into (a table
//! function, a `PIVOT`) passes on every sensitive column it reads, a computation is
//! reported at whatever depth it happens even if an outer query discards it, and a
//! result whose columns cannot be told apart (a `UNION` over `SELECT *`, a statement
//! kind this module does not follow) counts as a computation. A rule may then refuse a
//! harmless query; it never lets a sensitive value out unnoticed.

use std::fmt;

use sqlparser::ast::{
    Delete, Expr, FromTable, Ident, Insert, JoinConstraint, JoinOperator, ObjectName, ObjectNamePart, Query, Select,
    SelectItem, SelectItemQualifiedWildcardKind, SetExpr, Statement, TableAliasColumnDef, TableFactor, TableObject,
    TableWithJoins, Update, UpdateTableFromKind, Visit, WildcardAdditionalOptions,
};

use super::Table;

/// The sensitive columns of a config: per table (`customers` or `main.customers`), and
/// columns sensitive in every table (`*`), all lower-case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SensitiveColumns {
    tables: Vec<(Table, Vec<String>)>,
    everywhere: Vec<String>,
}

impl SensitiveColumns {
    /// `table` is a [`Table::parse`] pattern or `*`; `columns` are unquoted names.
    pub fn add(&mut self, table: Option<Table>, columns: Vec<String>) {
        let columns = columns.into_iter().map(|c| c.to_lowercase());
        match table {
            Some(table) => self.tables.push((table, columns.collect())),
            None => self.everywhere.extend(columns),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tables.iter().all(|(_, c)| c.is_empty()) && self.everywhere.is_empty()
    }

    /// The sensitive columns of `table`, each once.
    fn of(&self, table: &Table) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        let listed = self.tables.iter().filter(|(t, _)| t.matches(table)).flat_map(|(_, c)| c);
        for column in listed.chain(&self.everywhere) {
            if !out.contains(&column.as_str()) {
                out.push(column);
            }
        }
        out
    }

    fn contains(&self, table: &Table, column: &str) -> bool {
        self.everywhere.iter().any(|c| c == column)
            || self.tables.iter().any(|(t, c)| t.matches(table) && c.iter().any(|c| c == column))
    }
}

/// A sensitive column of a table: `customers.email`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub table: Table,
    pub name: String,
}

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.table, self.name)
    }
}

/// How a statement uses a sensitive column; the values of the `sensitive` facet of a
/// `sql` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseKind {
    /// Returned as it is stored, under its own name or an alias: masked by name.
    Column,
    /// Something computed from it is returned or written: a function, a cast, an
    /// operator, `CASE`, an aggregate, a copy into another column — or a result whose
    /// columns cannot be told apart. Not maskable.
    Transform,
    /// It decides which rows come back or in which order (`WHERE`, `JOIN … ON`,
    /// `GROUP BY`, `HAVING`, `ORDER BY`, `LIMIT`, window clauses): an oracle, since an
    /// agent learns a value by asking about it (`WHERE ssn LIKE '12%'`).
    Predicate,
}

impl UseKind {
    pub const ALL: [UseKind; 3] = [UseKind::Column, UseKind::Transform, UseKind::Predicate];

    pub fn as_str(self) -> &'static str {
        match self {
            UseKind::Column => "column",
            UseKind::Transform => "transform",
            UseKind::Predicate => "predicate",
        }
    }

    pub fn named(name: &str) -> Option<UseKind> {
        UseKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// One use of a sensitive column. `detail` says where, in words a refusal can show: it
/// names result columns and clauses, never a literal of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Use {
    pub kind: UseKind,
    pub column: Column,
    pub detail: String,
}

impl fmt::Display for Use {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.column, self.detail)
    }
}

/// What a text does with sensitive columns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ColumnUses {
    /// The result columns (lower-case names) that carry a sensitive value unchanged, each
    /// once: the ones to mask by name.
    pub returned: Vec<String>,
    pub uses: Vec<Use>,
}

impl ColumnUses {
    pub fn has(&self, kind: UseKind) -> bool {
        self.uses.iter().any(|u| u.kind == kind)
    }

    /// The first use of a kind other than [`UseKind::Column`]: what makes the text
    /// unanswerable under column masking.
    pub fn unmaskable(&self) -> Option<&Use> {
        self.uses.iter().find(|u| u.kind != UseKind::Column)
    }

    fn note(&mut self, kind: UseKind, column: Column, detail: impl Into<String>) {
        let detail = detail.into();
        if !self.uses.iter().any(|u| u.kind == kind && u.column == column && u.detail == detail) {
            self.uses.push(Use { kind, column, detail });
        }
    }
}

/// Follows every statement of a text.
pub(super) fn column_uses(statements: &[Statement], sensitive: &SensitiveColumns) -> ColumnUses {
    let mut walk = Walk { sensitive, out: ColumnUses::default() };
    for statement in statements {
        walk.statement(statement);
    }
    walk.out
}

/// Where a value comes from: exactly one sensitive column's stored value (`direct`),
/// and/or sensitive columns it is computed from (`derived`).
#[derive(Debug, Clone, Default)]
struct Lineage {
    direct: Option<Column>,
    derived: Vec<Column>,
}

impl Lineage {
    fn direct(column: Column) -> Lineage {
        Lineage { direct: Some(column), derived: Vec::new() }
    }

    fn columns(&self) -> impl Iterator<Item = &Column> {
        self.direct.iter().chain(&self.derived)
    }

    fn add_derived(&mut self, column: Column) {
        if self.direct.as_ref() != Some(&column) && !self.derived.contains(&column) {
            self.derived.push(column);
        }
    }

    fn merge(&mut self, other: Lineage) {
        match (&self.direct, other.direct) {
            (None, Some(d)) if self.derived.is_empty() => self.direct = Some(d),
            (_, Some(d)) => self.add_derived(d),
            (_, None) => {}
        }
        other.derived.into_iter().for_each(|c| self.add_derived(c));
    }

    /// The lineage of something computed from this value.
    fn computed(self) -> Lineage {
        let mut out = Lineage { direct: None, derived: self.derived };
        if let Some(d) = self.direct {
            if !out.derived.contains(&d) {
                out.derived.insert(0, d);
            }
        }
        out
    }
}

/// A result column of a query: named (or not: an expression without an alias, whose
/// name the database makes up), or all columns of a base table (`*`), whose number and
/// order only the database knows.
#[derive(Debug, Clone)]
enum Item {
    Known { name: Option<String>, lineage: Lineage },
    Star(Table),
}

/// A relation of a `FROM` clause, by the name a query refers to it with.
struct Relation {
    name: Option<String>,
    body: RelationBody,
}

enum RelationBody {
    Base(Table),
    Derived(Vec<Item>),
    /// A relation whose columns are not known (table functions, `PIVOT`, …): each of its
    /// columns may be computed from every sensitive column it reads.
    Opaque(Lineage),
}

/// The names a query's expressions can see: its relations, the result columns it names
/// (an `ORDER BY` may use them), the CTEs in force, and the enclosing query's scope.
#[derive(Default)]
struct Scope<'p> {
    relations: Vec<Relation>,
    outputs: Vec<(String, Lineage)>,
    ctes: Vec<(String, Vec<Item>)>,
    parent: Option<&'p Scope<'p>>,
}

impl<'p> Scope<'p> {
    fn child(parent: &'p Scope<'p>) -> Scope<'p> {
        Scope { parent: Some(parent), ..Scope::default() }
    }

    fn chain(&self) -> impl Iterator<Item = &Scope<'_>> {
        std::iter::successors(Some(self), |s| s.parent)
    }

    fn cte(&self, name: &str) -> Option<&[Item]> {
        self.chain().find_map(|s| s.ctes.iter().rev().find(|(n, _)| n == name).map(|(_, items)| items.as_slice()))
    }

    /// What `qualifier.column` may hold. A qualifier that names no relation in reach
    /// (or a schema-qualified one) is ignored: the name is then looked up everywhere.
    fn resolve(&self, qualifier: Option<&str>, column: &str, sensitive: &SensitiveColumns) -> Lineage {
        let column = column.to_lowercase();
        if let Some(q) = qualifier {
            for scope in self.chain() {
                if let Some(r) = scope.relations.iter().find(|r| r.name.as_deref() == Some(q)) {
                    return r.lookup(&column, sensitive);
                }
            }
        }
        let mut out = Lineage::default();
        for scope in self.chain() {
            for r in &scope.relations {
                out.merge(r.lookup(&column, sensitive));
            }
            for (name, lineage) in &scope.outputs {
                if *name == column {
                    out.merge(lineage.clone());
                }
            }
        }
        out
    }
}

impl Relation {
    fn lookup(&self, column: &str, sensitive: &SensitiveColumns) -> Lineage {
        match &self.body {
            RelationBody::Base(table) if sensitive.contains(table, column) => {
                Lineage::direct(Column { table: table.clone(), name: column.to_string() })
            }
            RelationBody::Base(_) => Lineage::default(),
            RelationBody::Derived(items) => {
                let mut out = Lineage::default();
                for item in items {
                    match item {
                        Item::Known { name: Some(n), lineage } if n == column => out.merge(lineage.clone()),
                        Item::Star(table) if sensitive.contains(table, column) => {
                            out.merge(Lineage::direct(Column { table: table.clone(), name: column.to_string() }))
                        }
                        _ => {}
                    }
                }
                out
            }
            RelationBody::Opaque(lineage) => lineage.clone(),
        }
    }
}

struct Walk<'c> {
    sensitive: &'c SensitiveColumns,
    out: ColumnUses,
}

/// Clauses after a query's body (`ORDER BY`, `LIMIT`, `FETCH`), judged in the scope of
/// the body's `SELECT`.
struct Tail<'q> {
    query: Option<&'q Query>,
}

impl Walk<'_> {
    fn statement(&mut self, statement: &Statement) {
        let root = Scope::default();
        match statement {
            Statement::Query(query) => {
                let items = self.query(query, &root);
                self.returned(&items);
            }
            Statement::Insert(insert) => self.insert(insert, &root),
            Statement::Update(update) => self.update(update, &root),
            Statement::Delete(delete) => self.delete(delete, &root),
            // A plan, not rows: nothing of a table's values comes back.
            Statement::Explain { .. } | Statement::ExplainTable { .. } => {}
            other => {
                let mut tables = Relations::default();
                super::visit::walk(other, &mut tables);
                for table in tables.0 {
                    for column in self.sensitive.of(&table) {
                        let column = Column { table: table.clone(), name: column.to_string() };
                        self.out.note(
                            UseKind::Transform,
                            column,
                            "a statement whose result cannot be masked by column",
                        );
                    }
                }
            }
        }
    }

    /// The top level's result columns: what gets masked by name.
    fn returned(&mut self, items: &[Item]) {
        for item in items {
            match item {
                Item::Known { name: Some(name), lineage: Lineage { direct: Some(column), .. } } => {
                    self.out.note(UseKind::Column, column.clone(), format!("result column `{name}`"));
                    push_once(&mut self.out.returned, name);
                }
                Item::Known { .. } => {}
                Item::Star(table) => {
                    for name in self.sensitive.of(table) {
                        let column = Column { table: table.clone(), name: name.to_string() };
                        self.out.note(UseKind::Column, column, format!("result column `{name}` (`*`)"));
                        push_once(&mut self.out.returned, name);
                    }
                }
            }
        }
    }

    fn query(&mut self, query: &Query, outer: &Scope<'_>) -> Vec<Item> {
        let mut scope = Scope::child(outer);
        for cte in query.with.iter().flat_map(|w| &w.cte_tables) {
            let items = self.query(&cte.query, &scope);
            let items = self.renamed(items, &cte.alias.columns);
            scope.ctes.push((lower(&cte.alias.name), items));
        }
        self.set_expr(&query.body, &scope, Tail { query: Some(query) })
    }

    fn set_expr(&mut self, body: &SetExpr, scope: &Scope<'_>, tail: Tail<'_>) -> Vec<Item> {
        let items = match body {
            SetExpr::Select(select) => return self.select(select, scope, tail),
            SetExpr::Query(query) => self.query(query, scope),
            SetExpr::SetOperation { left, right, .. } => {
                let left = self.set_expr(left, scope, Tail { query: None });
                let right = self.set_expr(right, scope, Tail { query: None });
                self.set_operation(left, right)
            }
            SetExpr::Values(values) => {
                let mut items: Vec<Item> = Vec::new();
                for row in &values.rows {
                    for (i, e) in row.iter().enumerate() {
                        let lineage = self.expression(e, scope).computed();
                        self.transformed(&lineage, "a VALUES list");
                        match items.get_mut(i) {
                            Some(Item::Known { lineage: l, .. }) => l.merge(lineage),
                            _ => items.push(Item::Known { name: None, lineage }),
                        }
                    }
                }
                items
            }
            SetExpr::Table(table) => {
                let name = table.table_name.as_ref().map(lower).unwrap_or_default();
                vec![Item::Star(Table { schema: table.schema_name.as_ref().map(lower), name })]
            }
            SetExpr::Insert(statement)
            | SetExpr::Update(statement)
            | SetExpr::Delete(statement)
            | SetExpr::Merge(statement) => self.nested_statement(statement, scope),
        };
        // `ORDER BY` of a union or a parenthesised query names its result columns.
        let mut outputs = Scope::child(scope);
        outputs.relations.push(Relation { name: None, body: RelationBody::Derived(items.clone()) });
        self.tail(&tail, &outputs);
        items
    }

    /// A data-changing statement inside a query (`WITH d AS (DELETE … RETURNING *)`):
    /// its `RETURNING` columns are the query's rows.
    fn nested_statement(&mut self, statement: &Statement, scope: &Scope<'_>) -> Vec<Item> {
        match statement {
            Statement::Insert(insert) => self.insert_items(insert, scope),
            Statement::Update(update) => self.update_items(update, scope),
            Statement::Delete(delete) => self.delete_items(delete, scope),
            other => {
                let lineage = self.opaque(other, scope);
                self.transformed(&lineage, "a statement whose result cannot be masked by column");
                vec![Item::Known { name: None, lineage }]
            }
        }
    }

    fn tail(&mut self, tail: &Tail<'_>, scope: &Scope<'_>) {
        if let Some(query) = tail.query {
            self.predicate(&query.order_by, scope, "ORDER BY");
            self.predicate(&query.limit_clause, scope, "LIMIT");
            self.predicate(&query.fetch, scope, "FETCH");
        }
    }

    /// Columns of a set operation: named by the left side, each carrying what any side
    /// puts in its position. With `*` on a table the positions are unknown.
    fn set_operation(&mut self, left: Vec<Item>, right: Vec<Item>) -> Vec<Item> {
        if left.iter().chain(&right).any(|i| matches!(i, Item::Star(_))) {
            for item in &right {
                for column in self.item_columns(item) {
                    self.out.note(
                        UseKind::Transform,
                        column,
                        "a UNION, INTERSECT or EXCEPT with `*`, whose columns cannot be told apart: list them",
                    );
                }
            }
            return left;
        }
        let mut out = left;
        for (i, item) in right.into_iter().enumerate() {
            let Item::Known { lineage, .. } = item else { continue };
            match out.get_mut(i) {
                Some(Item::Known { lineage: l, .. }) => l.merge(lineage),
                _ => out.push(Item::Known { name: None, lineage }),
            }
        }
        out
    }

    fn item_columns(&self, item: &Item) -> Vec<Column> {
        match item {
            Item::Known { lineage, .. } => lineage.columns().cloned().collect(),
            Item::Star(table) => self
                .sensitive
                .of(table)
                .into_iter()
                .map(|name| Column { table: table.clone(), name: name.to_string() })
                .collect(),
        }
    }

    /// Column aliases (`WITH c(a, b) AS …`, `AS t(a, b)`) rename result columns by
    /// position; behind a `*` the positions are unknown.
    fn renamed(&mut self, mut items: Vec<Item>, names: &[TableAliasColumnDef]) -> Vec<Item> {
        if names.is_empty() {
            return items;
        }
        if items.iter().any(|i| matches!(i, Item::Star(_))) {
            for item in &items {
                for column in self.item_columns(item) {
                    self.out.note(UseKind::Transform, column, "column aliases over `*`, which cannot be followed");
                }
            }
        }
        for (item, def) in items.iter_mut().zip(names) {
            if let Item::Known { name, .. } = item {
                *name = Some(lower(&def.name));
            }
        }
        items
    }

    fn select(&mut self, select: &Select, outer: &Scope<'_>, tail: Tail<'_>) -> Vec<Item> {
        let mut scope = Scope::child(outer);
        for from in &select.from {
            self.from(from, &mut scope);
        }
        let mut items = Vec::new();
        for item in &select.projection {
            self.select_item(item, &scope, &mut items);
        }
        scope.outputs = items
            .iter()
            .filter_map(|i| match i {
                Item::Known { name: Some(n), lineage } => Some((n.clone(), lineage.clone())),
                _ => None,
            })
            .collect();
        self.predicate(&select.selection, &scope, "WHERE");
        self.predicate(&select.prewhere, &scope, "PREWHERE");
        self.predicate(&select.group_by, &scope, "GROUP BY");
        self.predicate(&select.having, &scope, "HAVING");
        self.tail(&tail, &scope);
        // The other clauses that can hold an expression (sqlparser 0.64's `Select`; the
        // version is pinned, and a new field shows up here when it is upgraded).
        let where_else = "a window, QUALIFY, DISTINCT ON, TOP, CONNECT BY or SORT BY clause";
        self.predicate(&select.distinct, &scope, where_else);
        self.predicate(&select.top, &scope, where_else);
        self.predicate(&select.lateral_views, &scope, where_else);
        self.predicate(&select.connect_by, &scope, where_else);
        self.predicate(&select.cluster_by, &scope, where_else);
        self.predicate(&select.distribute_by, &scope, where_else);
        self.predicate(&select.sort_by, &scope, where_else);
        self.predicate(&select.named_window, &scope, where_else);
        self.predicate(&select.qualify, &scope, where_else);
        items
    }

    fn from(&mut self, from: &TableWithJoins, scope: &mut Scope<'_>) {
        self.factor(&from.relation, scope);
        for join in &from.joins {
            self.factor(&join.relation, scope);
            self.predicate(&join.join_operator, scope, "JOIN … ON");
            self.join_columns(&join.join_operator, scope);
        }
    }

    /// `USING (c)` and `NATURAL` compare columns named, not written as expressions.
    fn join_columns(&mut self, operator: &JoinOperator, scope: &Scope<'_>) {
        let mut lineage = Lineage::default();
        match join_constraint(operator) {
            Some(JoinConstraint::Using(names) | JoinConstraint::UsingAlias(names, _)) => {
                for name in names.iter().filter_map(|n| n.0.last().and_then(part_name)) {
                    lineage.merge(scope.resolve(None, &name, self.sensitive));
                }
            }
            Some(JoinConstraint::Natural) => {
                for r in &scope.relations {
                    for item in self.expanded_columns(r) {
                        lineage.add_derived(item);
                    }
                }
            }
            _ => {}
        }
        for column in lineage.columns() {
            self.out.note(UseKind::Predicate, column.clone(), "used in JOIN … USING or NATURAL JOIN");
        }
    }

    /// The sensitive columns a relation's `*` would return.
    fn expanded_columns(&self, relation: &Relation) -> Vec<Column> {
        match &relation.body {
            RelationBody::Base(table) => self.item_columns(&Item::Star(table.clone())),
            RelationBody::Derived(items) => items.iter().flat_map(|i| self.item_columns(i)).collect(),
            RelationBody::Opaque(lineage) => lineage.columns().cloned().collect(),
        }
    }

    fn factor(&mut self, factor: &TableFactor, scope: &mut Scope<'_>) {
        let relation = match factor {
            TableFactor::Table { name, alias, args: None, .. } => {
                let table = table_of(name);
                let alias_name = alias.as_ref().map(|a| lower(&a.name));
                let cte = match (&table.schema, scope.cte(&table.name)) {
                    (None, Some(items)) => Some(items.to_vec()),
                    _ => None,
                };
                let columns = alias.as_ref().map(|a| a.columns.as_slice()).unwrap_or_default();
                let body = match cte {
                    Some(items) => RelationBody::Derived(self.renamed(items, columns)),
                    None if !columns.is_empty() => {
                        // Renamed columns of a table: which name is which column is unknown.
                        let mut lineage = Lineage::default();
                        for c in self.sensitive.of(&table) {
                            lineage.add_derived(Column { table: table.clone(), name: c.to_string() });
                        }
                        RelationBody::Opaque(lineage)
                    }
                    None => RelationBody::Base(table.clone()),
                };
                Relation { name: alias_name.or(Some(table.name)), body }
            }
            TableFactor::Derived { subquery, alias, .. } => {
                let items = self.query(subquery, scope);
                let columns = alias.as_ref().map(|a| a.columns.as_slice()).unwrap_or_default();
                let items = self.renamed(items, columns);
                Relation { name: alias.as_ref().map(|a| lower(&a.name)), body: RelationBody::Derived(items) }
            }
            TableFactor::NestedJoin { table_with_joins, .. } => return self.from(table_with_joins, scope),
            other => Relation { name: None, body: RelationBody::Opaque(self.opaque(other, scope)) },
        };
        scope.relations.push(relation);
    }

    /// The lineage of something this walk cannot see into: computed from every sensitive
    /// column it names and every sensitive column of every table it reads.
    fn opaque<V: Visit>(&mut self, node: &V, scope: &Scope<'_>) -> Lineage {
        let mut lineage = self.references(node, scope).computed();
        let mut tables = Relations::default();
        super::visit::walk(node, &mut tables);
        for table in tables.0 {
            for c in self.sensitive.of(&table) {
                lineage.add_derived(Column { table: table.clone(), name: c.to_string() });
            }
        }
        lineage
    }

    fn select_item(&mut self, item: &SelectItem, scope: &Scope<'_>, items: &mut Vec<Item>) {
        match item {
            SelectItem::UnnamedExpr(e) => {
                let name = match e {
                    Expr::Identifier(i) => Some(lower(i)),
                    Expr::CompoundIdentifier(parts) => parts.last().map(lower),
                    _ => None,
                };
                items.push(self.output(name, e, scope));
            }
            SelectItem::ExprWithAlias { expr, alias } => items.push(self.output(Some(lower(alias)), expr, scope)),
            SelectItem::ExprWithAliases { expr, .. } => items.push(self.output(None, expr, scope)),
            SelectItem::Wildcard(options) => {
                for r in &scope.relations {
                    items.extend(self.expanded(r));
                }
                self.wildcard_options(options, scope, items);
            }
            SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(name), options) => {
                let wanted = name.0.last().and_then(part_name);
                let named: Vec<&Relation> =
                    scope.relations.iter().filter(|r| r.name.is_some() && r.name == wanted).collect();
                // A qualifier that names no relation here: every relation, to be safe.
                let relations: Vec<&Relation> = if named.is_empty() { scope.relations.iter().collect() } else { named };
                for r in relations {
                    items.extend(self.expanded(r));
                }
                self.wildcard_options(options, scope, items);
            }
            SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::Expr(e), options) => {
                items.push(self.output(None, e, scope));
                self.wildcard_options(options, scope, items);
            }
        }
    }

    fn expanded(&mut self, relation: &Relation) -> Vec<Item> {
        match &relation.body {
            RelationBody::Base(table) => vec![Item::Star(table.clone())],
            RelationBody::Derived(items) => items.clone(),
            RelationBody::Opaque(lineage) => {
                self.transformed(lineage, "`*` over a table function or another relation that cannot be followed");
                vec![Item::Known { name: None, lineage: lineage.clone() }]
            }
        }
    }

    /// `* REPLACE (expr AS col)` computes `col`; `* RENAME (a AS b)` moves a name where
    /// this walk does not follow it.
    fn wildcard_options(&mut self, options: &WildcardAdditionalOptions, scope: &Scope<'_>, items: &mut Vec<Item>) {
        for replaced in options.opt_replace.iter().flat_map(|r| &r.items) {
            let lineage = self.expression(&replaced.expr, scope).computed();
            items.push(self.computed_output(Some(lower(&replaced.column_name)), lineage, &replaced.expr));
        }
        if options.opt_rename.is_some() {
            for item in items.clone() {
                for column in self.item_columns(&item) {
                    self.out.note(UseKind::Transform, column, "`* RENAME`, which cannot be followed");
                }
            }
        }
    }

    /// A result column: a sensitive value passed as it is keeps its lineage; one that is
    /// computed (or has no name the filter can know) is a transform.
    fn output(&mut self, name: Option<String>, expr: &Expr, scope: &Scope<'_>) -> Item {
        let lineage = self.expression(expr, scope);
        let bare = matches!(expr, Expr::Identifier(_) | Expr::CompoundIdentifier(_));
        if bare && name.is_some() && lineage.derived.is_empty() {
            return Item::Known { name, lineage };
        }
        self.computed_output(name, lineage.computed(), expr)
    }

    fn computed_output(&mut self, name: Option<String>, lineage: Lineage, expr: &Expr) -> Item {
        if lineage.derived.is_empty() {
            return Item::Known { name, lineage };
        }
        let what = match &name {
            Some(n) => format!("result column `{n}` computes it with {}", describe(expr)),
            None => format!("a result column without a name computes it with {}", describe(expr)),
        };
        for column in lineage.derived.clone() {
            self.out.note(UseKind::Transform, column, what.clone());
        }
        Item::Known { name, lineage }
    }

    fn transformed(&mut self, lineage: &Lineage, what: &str) {
        for column in lineage.columns() {
            self.out.note(UseKind::Transform, column.clone(), what);
        }
    }

    /// What an expression's value may hold.
    fn expression(&mut self, expr: &Expr, scope: &Scope<'_>) -> Lineage {
        match expr {
            Expr::Identifier(ident) => scope.resolve(None, &ident.value, self.sensitive),
            Expr::CompoundIdentifier(parts) => match parts.as_slice() {
                [.., qualifier, column] => scope.resolve(Some(&lower(qualifier)), &column.value, self.sensitive),
                [column] => scope.resolve(None, &column.value, self.sensitive),
                [] => Lineage::default(),
            },
            other => self.references(other, scope).computed(),
        }
    }

    /// Every sensitive column a node refers to, subqueries included.
    fn references<V: Visit>(&mut self, node: &V, scope: &Scope<'_>) -> Lineage {
        let mut refs = References { walk: self, scope, depth: 0, lineage: Lineage::default() };
        super::visit::walk(node, &mut refs);
        refs.lineage
    }

    fn predicate<V: Visit>(&mut self, node: &V, scope: &Scope<'_>, clause: &str) {
        let lineage = self.references(node, scope);
        for column in lineage.columns() {
            self.out.note(UseKind::Predicate, column.clone(), format!("used in {clause}"));
        }
    }

    fn insert(&mut self, insert: &Insert, root: &Scope<'_>) {
        let items = self.insert_items(insert, root);
        self.returned(&items);
    }

    fn insert_items(&mut self, insert: &Insert, outer: &Scope<'_>) -> Vec<Item> {
        let mut scope = Scope::child(outer);
        if let TableObject::TableName(name) = &insert.table {
            let table = table_of(name);
            scope.relations.push(Relation { name: Some(table.name.clone()), body: RelationBody::Base(table) });
        }
        if let Some(source) = &insert.source {
            let items = self.query(source, &scope);
            for item in &items {
                for column in self.item_columns(item) {
                    self.out.note(UseKind::Transform, column, "copied by INSERT … SELECT");
                }
            }
        }
        let conflict = self.references(&insert.on, &scope);
        self.transformed(&conflict, "copied by INSERT … ON CONFLICT / DUPLICATE KEY UPDATE");
        self.returning(insert.returning.as_deref(), &scope)
    }

    fn update(&mut self, update: &Update, root: &Scope<'_>) {
        let items = self.update_items(update, root);
        self.returned(&items);
    }

    fn update_items(&mut self, update: &Update, outer: &Scope<'_>) -> Vec<Item> {
        let mut scope = Scope::child(outer);
        self.from(&update.table, &mut scope);
        if let Some(UpdateTableFromKind::BeforeSet(from) | UpdateTableFromKind::AfterSet(from)) = &update.from {
            from.iter().for_each(|f| self.from(f, &mut scope));
        }
        for assignment in &update.assignments {
            let lineage = self.expression(&assignment.value, &scope).computed();
            self.transformed(&lineage, "copied by UPDATE … SET");
        }
        self.predicate(&update.selection, &scope, "WHERE");
        self.predicate(&update.order_by, &scope, "ORDER BY");
        self.predicate(&update.limit, &scope, "LIMIT");
        self.returning(update.returning.as_deref(), &scope)
    }

    fn delete(&mut self, delete: &Delete, root: &Scope<'_>) {
        let items = self.delete_items(delete, root);
        self.returned(&items);
    }

    fn delete_items(&mut self, delete: &Delete, outer: &Scope<'_>) -> Vec<Item> {
        let mut scope = Scope::child(outer);
        let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &delete.from;
        from.iter().chain(delete.using.iter().flatten()).for_each(|f| self.from(f, &mut scope));
        self.predicate(&delete.selection, &scope, "WHERE");
        self.predicate(&delete.order_by, &scope, "ORDER BY");
        self.predicate(&delete.limit, &scope, "LIMIT");
        self.returning(delete.returning.as_deref(), &scope)
    }

    fn returning(&mut self, items: Option<&[SelectItem]>, scope: &Scope<'_>) -> Vec<Item> {
        let mut out = Vec::new();
        for item in items.unwrap_or_default() {
            self.select_item(item, scope, &mut out);
        }
        out
    }
}

/// Collects the sensitive columns a node refers to at its own level, and what the
/// subqueries directly inside it return (each followed by the walk, in this scope).
struct References<'w, 'c, 's, 'p> {
    walk: &'w mut Walk<'c>,
    scope: &'s Scope<'p>,
    /// How many queries deep the visitor is: names inside a subquery belong to it.
    depth: usize,
    lineage: Lineage,
}

impl super::visit::Hooks for References<'_, '_, '_, '_> {
    fn query(&mut self, query: &Query) {
        if self.depth == 0 {
            let items = self.walk.query(query, self.scope);
            for item in &items {
                for column in self.walk.item_columns(item) {
                    self.lineage.add_derived(column);
                }
            }
        }
        self.depth += 1;
    }

    fn query_done(&mut self, _query: &Query) {
        self.depth = self.depth.saturating_sub(1);
    }

    fn expr(&mut self, expr: &Expr) {
        if self.depth == 0 && matches!(expr, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
            let found = self.walk.expression(expr, self.scope);
            self.lineage.merge(found);
        }
    }
}

/// The tables a node reads.
#[derive(Default)]
struct Relations(Vec<Table>);

impl super::visit::Hooks for Relations {
    fn relation(&mut self, relation: &ObjectName) {
        let table = table_of(relation);
        if !self.0.contains(&table) {
            self.0.push(table);
        }
    }
}

fn join_constraint(operator: &JoinOperator) -> Option<&JoinConstraint> {
    match operator {
        JoinOperator::Join(c)
        | JoinOperator::Inner(c)
        | JoinOperator::Left(c)
        | JoinOperator::LeftOuter(c)
        | JoinOperator::Right(c)
        | JoinOperator::RightOuter(c)
        | JoinOperator::FullOuter(c)
        | JoinOperator::CrossJoin(c)
        | JoinOperator::Semi(c)
        | JoinOperator::LeftSemi(c)
        | JoinOperator::RightSemi(c)
        | JoinOperator::Anti(c)
        | JoinOperator::LeftAnti(c)
        | JoinOperator::RightAnti(c)
        | JoinOperator::StraightJoin(c)
        | JoinOperator::AsOf { constraint: c, .. } => Some(c),
        JoinOperator::CrossApply
        | JoinOperator::OuterApply
        | JoinOperator::ArrayJoin
        | JoinOperator::LeftArrayJoin
        | JoinOperator::InnerArrayJoin => None,
    }
}

fn table_of(name: &ObjectName) -> Table {
    let mut parts = name.0.iter().map(|p| part_name(p).unwrap_or_else(|| "?".into()));
    let last = parts.next_back().unwrap_or_default();
    Table { schema: parts.next_back(), name: last }
}

fn part_name(part: &ObjectNamePart) -> Option<String> {
    match part {
        ObjectNamePart::Identifier(ident) => Some(lower(ident)),
        ObjectNamePart::Function(_) => None,
    }
}

fn lower(ident: &Ident) -> String {
    ident.value.to_lowercase()
}

fn push_once(list: &mut Vec<String>, name: &str) {
    if !list.iter().any(|n| n == name) {
        list.push(name.to_string());
    }
}

/// What computes a value, in words that quote nothing of the text but a function's name.
fn describe(expr: &Expr) -> String {
    match expr {
        Expr::Function(f) => format!("function `{}`", f.name.to_string().to_lowercase()),
        Expr::BinaryOp { op, .. } => format!("operator `{op}`"),
        Expr::UnaryOp { op, .. } => format!("operator `{op}`"),
        Expr::Cast { .. } => "a cast".into(),
        Expr::Case { .. } => "CASE".into(),
        Expr::Collate { .. } => "COLLATE".into(),
        Expr::Substring { .. } => "SUBSTRING".into(),
        Expr::Trim { .. } => "TRIM".into(),
        Expr::Subquery(_) => "a subquery".into(),
        Expr::Nested(inner) => describe(inner),
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => "a subquery, CTE or table function".into(),
        _ => "an expression".into(),
    }
}
