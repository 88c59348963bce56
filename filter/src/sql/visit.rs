//! The one instance of the parser's visitor that every walk of this module goes through.
//!
//! Why: `sqlparser`'s derived visitor is generic over the visitor type, so each type
//! that implements `Visitor` gets its own copy of the code that walks every node of the
//! syntax tree — hundreds of kilobytes of Wasm each, which every proxy worker compiles
//! and keeps. Walks implement the object-safe [`Hooks`] instead, and share one copy.

use std::ops::ControlFlow;

use sqlparser::ast::{Expr, ObjectName, Query, Select, Statement, Visit, Visitor};

/// What a walk wants to see; every hook defaults to nothing.
pub(super) trait Hooks {
    fn statement(&mut self, _statement: &Statement) {}
    fn query(&mut self, _query: &Query) {}
    fn query_done(&mut self, _query: &Query) {}
    fn select(&mut self, _select: &Select) {}
    /// A table or view read or written (not a dropped or copied one: see `classify`).
    fn relation(&mut self, _relation: &ObjectName) {}
    fn expr(&mut self, _expr: &Expr) {}
}

/// Walks `node` and everything inside it, in the parser's order.
pub(super) fn walk<N: Visit>(node: &N, hooks: &mut dyn Hooks) {
    let _ = node.visit(&mut Adapter(hooks));
}

struct Adapter<'h>(&'h mut dyn Hooks);

impl Visitor for Adapter<'_> {
    type Break = ();

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
        self.0.statement(statement);
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        self.0.query(query);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        self.0.query_done(query);
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<()> {
        self.0.select(select);
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        self.0.relation(relation);
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        self.0.expr(expr);
        ControlFlow::Continue(())
    }
}
