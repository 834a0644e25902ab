//! Values crossing the store boundary, the same for both backends: parameters sent with a statement and
//! the rows that come back. GUIDs and timestamps arrive as native types from SQL Server and as text from
//! SQLite; the accessors accept both.

use super::StoreError;
use chrono::NaiveDateTime;
use uuid::Uuid;

/// A statement parameter or a column value.
#[derive(Clone, Debug, PartialEq)]
pub enum SqlValue {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(String),
    Guid(Uuid),
    DateTime(NaiveDateTime),
}

impl From<i64> for SqlValue {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}
impl From<i32> for SqlValue {
    fn from(v: i32) -> Self {
        Self::Int(v.into())
    }
}
impl From<bool> for SqlValue {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}
impl From<&str> for SqlValue {
    fn from(v: &str) -> Self {
        Self::Text(v.to_string())
    }
}
impl From<String> for SqlValue {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}
impl From<Uuid> for SqlValue {
    fn from(v: Uuid) -> Self {
        Self::Guid(v)
    }
}
impl From<NaiveDateTime> for SqlValue {
    fn from(v: NaiveDateTime) -> Self {
        Self::DateTime(v)
    }
}
impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::Null, Into::into)
    }
}

/// Timestamps are stored as UTC `DATETIME`; text form `YYYY-MM-DD HH:MM:SS.fff`.
pub const DATETIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.3f";

pub fn parse_datetime(text: &str) -> Option<NaiveDateTime> {
    let t = text.trim().trim_end_matches('Z');
    NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f"))
        .or_else(|_| NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S"))
        .ok()
}

/// One result row: column names (as the statement aliased them) and values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    columns: Vec<(String, SqlValue)>,
}

impl Row {
    pub fn new(columns: Vec<(String, SqlValue)>) -> Self {
        Self { columns }
    }

    pub fn value(&self, column: &str) -> Result<&SqlValue, StoreError> {
        self.columns
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(column))
            .map(|(_, v)| v)
            .ok_or_else(|| StoreError::Data {
                column: column.into(),
                problem: "no such column in the result".into(),
            })
    }

    fn bad(column: &str, v: &SqlValue, wanted: &str) -> StoreError {
        StoreError::Data {
            column: column.into(),
            problem: format!("expected {wanted}, found {v:?}"),
        }
    }

    pub fn opt_i64(&self, column: &str) -> Result<Option<i64>, StoreError> {
        match self.value(column)? {
            SqlValue::Null => Ok(None),
            SqlValue::Int(i) => Ok(Some(*i)),
            SqlValue::Bool(b) => Ok(Some(i64::from(*b))),
            SqlValue::Text(t) => t
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| Self::bad(column, &SqlValue::Text(t.clone()), "an integer")),
            SqlValue::Float(f) if f.fract() == 0.0 => Ok(Some(*f as i64)),
            v => Err(Self::bad(column, v, "an integer")),
        }
    }

    pub fn i64(&self, column: &str) -> Result<i64, StoreError> {
        self.opt_i64(column)?
            .ok_or_else(|| Self::bad(column, &SqlValue::Null, "an integer"))
    }

    pub fn i32(&self, column: &str) -> Result<i32, StoreError> {
        let v = self.i64(column)?;
        i32::try_from(v).map_err(|_| Self::bad(column, &SqlValue::Int(v), "a 32-bit integer"))
    }

    pub fn opt_i32(&self, column: &str) -> Result<Option<i32>, StoreError> {
        match self.opt_i64(column)? {
            None => Ok(None),
            Some(v) => i32::try_from(v)
                .map(Some)
                .map_err(|_| Self::bad(column, &SqlValue::Int(v), "a 32-bit integer")),
        }
    }

    pub fn bool(&self, column: &str) -> Result<bool, StoreError> {
        Ok(self.opt_i64(column)?.unwrap_or(0) != 0)
    }

    pub fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        match self.value(column)? {
            SqlValue::Null => Ok(None),
            SqlValue::Text(t) => Ok(Some(t.clone())),
            SqlValue::Int(i) => Ok(Some(i.to_string())),
            SqlValue::Float(f) => Ok(Some(f.to_string())),
            SqlValue::Bool(b) => Ok(Some(if *b { "1" } else { "0" }.into())),
            SqlValue::Guid(g) => Ok(Some(g.hyphenated().to_string())),
            SqlValue::DateTime(d) => Ok(Some(d.format(DATETIME_FORMAT).to_string())),
        }
    }

    pub fn text(&self, column: &str) -> Result<String, StoreError> {
        self.opt_text(column)?
            .ok_or_else(|| Self::bad(column, &SqlValue::Null, "text"))
    }

    pub fn opt_guid(&self, column: &str) -> Result<Option<Uuid>, StoreError> {
        match self.value(column)? {
            SqlValue::Null => Ok(None),
            SqlValue::Guid(g) => Ok(Some(*g)),
            SqlValue::Text(t) => Uuid::parse_str(t.trim())
                .map(Some)
                .map_err(|_| Self::bad(column, &SqlValue::Text(t.clone()), "a GUID")),
            v => Err(Self::bad(column, v, "a GUID")),
        }
    }

    pub fn guid(&self, column: &str) -> Result<Uuid, StoreError> {
        self.opt_guid(column)?
            .ok_or_else(|| Self::bad(column, &SqlValue::Null, "a GUID"))
    }

    pub fn opt_datetime(&self, column: &str) -> Result<Option<NaiveDateTime>, StoreError> {
        match self.value(column)? {
            SqlValue::Null => Ok(None),
            SqlValue::DateTime(d) => Ok(Some(*d)),
            SqlValue::Text(t) => parse_datetime(t)
                .map(Some)
                .ok_or_else(|| Self::bad(column, &SqlValue::Text(t.clone()), "a timestamp")),
            v => Err(Self::bad(column, v, "a timestamp")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_accept_both_backends_forms() {
        let g = Uuid::new_v4();
        let row = Row::new(vec![
            ("A".into(), SqlValue::Text(g.to_string())),
            ("B".into(), SqlValue::Guid(g)),
            ("C".into(), SqlValue::Text("2024-01-02 03:04:05.678".into())),
            ("D".into(), SqlValue::Int(1)),
            ("E".into(), SqlValue::Null),
        ]);
        assert_eq!(row.guid("a").ok(), Some(g));
        assert_eq!(row.guid("B").ok(), Some(g));
        assert!(row.opt_datetime("C").ok().flatten().is_some());
        assert!(row.bool("D").unwrap_or(false));
        assert_eq!(row.opt_text("E").ok(), Some(None));
        assert!(row.i32("missing").is_err());
        assert!(row.guid("D").is_err());
    }
}
