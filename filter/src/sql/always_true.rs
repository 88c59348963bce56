//! Whether a `WHERE` clause holds for every row, so that `DELETE … WHERE 1=1` counts as
//! unbounded like a `DELETE` without one.
//!
//! Constant folding over literals and the comparisons, `AND` / `OR` / `NOT`, `IS NULL`,
//! `BETWEEN`, `IN` and `LIKE '%'` built from them, plus a column compared with itself
//! (`id = id`). It answers "always true" only when that is certain for non-null columns,
//! and "don't know" otherwise: a clause it cannot fold is a bound.

use sqlparser::ast::{BinaryOperator, Expr, InTarget, UnaryOperator, Value};

/// A folded expression.
#[derive(Debug, Clone, PartialEq)]
enum Folded {
    Bool(bool),
    Number(f64),
    Text(String),
    Null,
    /// A column, by its lower-cased dotted name: equal to itself on every row where it is
    /// not null.
    Column(String),
}

pub(super) fn always_true(expr: &Expr) -> bool {
    truth(expr) == Some(true)
}

/// The truth of a condition, if it is the same on every row.
fn truth(expr: &Expr) -> Option<bool> {
    match fold(expr)? {
        Folded::Bool(b) => Some(b),
        // SQLite and MySQL read a number as a truth value; `WHERE 1` is every row.
        Folded::Number(n) => Some(n != 0.0),
        Folded::Null => Some(false),
        Folded::Text(_) | Folded::Column(_) => None,
    }
}

fn fold(expr: &Expr) -> Option<Folded> {
    match expr {
        Expr::Nested(inner) => fold(inner),
        Expr::Value(v) => match &v.value {
            Value::Boolean(b) => Some(Folded::Bool(*b)),
            Value::Number(n, _) => n.parse().ok().map(Folded::Number),
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(Folded::Text(s.clone())),
            Value::Null => Some(Folded::Null),
            _ => None,
        },
        Expr::Identifier(ident) => Some(Folded::Column(ident.value.to_lowercase())),
        Expr::CompoundIdentifier(idents) => {
            Some(Folded::Column(idents.iter().map(|i| i.value.to_lowercase()).collect::<Vec<_>>().join(".")))
        }
        Expr::UnaryOp { op: UnaryOperator::Not | UnaryOperator::BangNot, expr } => {
            truth(expr).map(|b| Folded::Bool(!b))
        }
        Expr::UnaryOp { op: UnaryOperator::Minus, expr } => match fold(expr)? {
            Folded::Number(n) => Some(Folded::Number(-n)),
            _ => None,
        },
        Expr::IsTrue(inner) => truth(inner).map(Folded::Bool),
        Expr::IsNull(inner) => constant(inner).map(|f| Folded::Bool(f == Folded::Null)),
        Expr::IsNotNull(inner) => constant(inner).map(|f| Folded::Bool(f != Folded::Null)),
        Expr::BinaryOp { left, op, right } => binary(left, op, right),
        Expr::Between { expr, negated, low, high } => {
            let (v, lo, hi) = (number(expr)?, number(low)?, number(high)?);
            Some(Folded::Bool((lo <= v && v <= hi) != *negated))
        }
        Expr::In { expr, target: InTarget::List(list), negated, .. } => {
            let needle = constant(expr)?;
            let hit = list.iter().any(|item| constant(item).as_ref() == Some(&needle));
            // A miss only settles it when every item folded.
            if hit || list.iter().all(|item| constant(item).is_some()) {
                Some(Folded::Bool(hit != *negated))
            } else {
                None
            }
        }
        Expr::Like { negated: false, expr, pattern, escape_char: None, .. } => match (fold(expr)?, fold(pattern)?) {
            // `%` alone matches every non-null text.
            (Folded::Text(_) | Folded::Column(_), Folded::Text(p)) if !p.is_empty() && p.chars().all(|c| c == '%') => {
                Some(Folded::Bool(true))
            }
            _ => None,
        },
        _ => None,
    }
}

/// A folded value that is not a column.
fn constant(expr: &Expr) -> Option<Folded> {
    fold(expr).filter(|f| !matches!(f, Folded::Column(_)))
}

fn number(expr: &Expr) -> Option<f64> {
    match fold(expr)? {
        Folded::Number(n) => Some(n),
        _ => None,
    }
}

fn binary(left: &Expr, op: &BinaryOperator, right: &Expr) -> Option<Folded> {
    match op {
        BinaryOperator::And => match (truth(left), truth(right)) {
            (Some(false), _) | (_, Some(false)) => Some(Folded::Bool(false)),
            (Some(true), Some(true)) => Some(Folded::Bool(true)),
            _ => None,
        },
        BinaryOperator::Or => match (truth(left), truth(right)) {
            (Some(true), _) | (_, Some(true)) => Some(Folded::Bool(true)),
            (Some(false), Some(false)) => Some(Folded::Bool(false)),
            _ => None,
        },
        BinaryOperator::Xor => Some(Folded::Bool(truth(left)? != truth(right)?)),
        BinaryOperator::Eq
        | BinaryOperator::NotEq
        | BinaryOperator::Lt
        | BinaryOperator::LtEq
        | BinaryOperator::Gt
        | BinaryOperator::GtEq => compare(fold(left)?, op, fold(right)?).map(Folded::Bool),
        BinaryOperator::Plus | BinaryOperator::Minus | BinaryOperator::Multiply => {
            let (a, b) = (number(left)?, number(right)?);
            Some(Folded::Number(match op {
                BinaryOperator::Plus => a + b,
                BinaryOperator::Minus => a - b,
                _ => a * b,
            }))
        }
        _ => None,
    }
}

fn compare(a: Folded, op: &BinaryOperator, b: Folded) -> Option<bool> {
    use std::cmp::Ordering;
    let ordering = match (&a, &b) {
        // A comparison with NULL is never true.
        (Folded::Null, _) | (_, Folded::Null) => return Some(false),
        (Folded::Column(x), Folded::Column(y)) if x == y => Ordering::Equal,
        (Folded::Number(x), Folded::Number(y)) => x.partial_cmp(y)?,
        (Folded::Text(x), Folded::Text(y)) => x.cmp(y),
        (Folded::Bool(x), Folded::Bool(y)) => x.cmp(y),
        // SQLite and MySQL compare `'1' = 1` as numbers.
        (Folded::Text(t), Folded::Number(n)) => t.trim().parse::<f64>().ok()?.partial_cmp(n)?,
        (Folded::Number(n), Folded::Text(t)) => n.partial_cmp(&t.trim().parse::<f64>().ok()?)?,
        _ => return None,
    };
    Some(match op {
        BinaryOperator::Eq => ordering == Ordering::Equal,
        BinaryOperator::NotEq => ordering != Ordering::Equal,
        BinaryOperator::Lt => ordering == Ordering::Less,
        BinaryOperator::LtEq => ordering != Ordering::Greater,
        BinaryOperator::Gt => ordering == Ordering::Greater,
        _ => ordering != Ordering::Less,
    })
}
