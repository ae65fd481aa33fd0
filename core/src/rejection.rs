//! Why a record was refused: the field and the problem, and how a JSON value's kind is named in one.

use serde_json::Value;

/// Why a record was rejected: the field and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {problem}")]
pub struct Rejection {
    /// The field at fault (`$` for the record itself).
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl Rejection {
    /// A rejection of `field`.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Rejection { field: field.into(), problem: problem.into() }
    }
}

/// How a JSON value's kind is named in a rejection.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
