//! Values between procfwk and tiberius: parameters bind in order as `@P1`…`@Pn`, result columns come
//! back as [`SqlValue`]s (the mapping is listed in the module documentation of [`super`]).

use crate::store::{Row, SqlValue, StoreError};
use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use tiberius::{ColumnData, FromSql, Query};

/// `sql` with `params` bound in order.
pub(super) fn bind<'a>(sql: &'a str, params: &'a [SqlValue]) -> Query<'a> {
    let mut query = Query::new(sql);
    for p in params {
        match p {
            SqlValue::Null => query.bind(Option::<&str>::None),
            SqlValue::Int(i) => query.bind(*i),
            SqlValue::Float(f) => query.bind(*f),
            SqlValue::Bool(b) => query.bind(*b),
            SqlValue::Text(t) => query.bind(t.as_str()),
            SqlValue::Guid(g) => query.bind(*g),
            SqlValue::DateTime(d) => query.bind(*d),
        }
    }
    query
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One column value of a result row.
pub(super) fn to_value(column: &str, data: &ColumnData<'static>) -> Result<SqlValue, StoreError> {
    let conversion = |e: tiberius::error::Error| StoreError::Data {
        column: column.to_string(),
        problem: e.to_string(),
    };
    let value = match data {
        ColumnData::U8(v) => v.map(|v| SqlValue::Int(v.into())),
        ColumnData::I16(v) => v.map(|v| SqlValue::Int(v.into())),
        ColumnData::I32(v) => v.map(|v| SqlValue::Int(v.into())),
        ColumnData::I64(v) => v.map(SqlValue::Int),
        ColumnData::F32(v) => v.map(|v| SqlValue::Float(v.into())),
        ColumnData::F64(v) => v.map(SqlValue::Float),
        ColumnData::Numeric(v) => v.map(|n| SqlValue::Float(f64::from(n))),
        ColumnData::Bit(v) => v.map(SqlValue::Bool),
        ColumnData::String(v) => v.as_ref().map(|s| SqlValue::Text(s.to_string())),
        ColumnData::Guid(v) => v.map(SqlValue::Guid),
        ColumnData::Binary(v) => v.as_ref().map(|b| SqlValue::Text(hex(b))),
        ColumnData::Xml(v) => v.as_ref().map(|x| SqlValue::Text(x.to_string())),
        ColumnData::DateTime(_) | ColumnData::SmallDateTime(_) | ColumnData::DateTime2(_) => {
            NaiveDateTime::from_sql(data)
                .map_err(conversion)?
                .map(SqlValue::DateTime)
        }
        // Through `DateTime<FixedOffset>`: on the wire the date and time are UTC (MS-TDS), which that
        // conversion honours; tiberius 0.12's `DateTime<Utc>` conversion subtracts the offset again.
        ColumnData::DateTimeOffset(_) => chrono::DateTime::<chrono::FixedOffset>::from_sql(data)
            .map_err(conversion)?
            .map(|d| SqlValue::DateTime(d.naive_utc())),
        ColumnData::Date(_) => NaiveDate::from_sql(data)
            .map_err(conversion)?
            .map(|d| SqlValue::DateTime(d.and_time(NaiveTime::MIN))),
        ColumnData::Time(_) => NaiveTime::from_sql(data)
            .map_err(conversion)?
            .map(|t| SqlValue::Text(t.format("%H:%M:%S%.f").to_string())),
    };
    Ok(value.unwrap_or(SqlValue::Null))
}

/// A result row as the store's [`Row`].
pub(super) fn to_row(row: &tiberius::Row) -> Result<Row, StoreError> {
    let mut columns = Vec::with_capacity(row.len());
    for (column, data) in row.cells() {
        columns.push((column.name().to_string(), to_value(column.name(), data)?));
    }
    Ok(Row::new(columns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_values() {
        let d = NaiveDate::from_ymd_opt(2024, 5, 6).and_then(|d| d.and_hms_milli_opt(7, 8, 9, 123));
        let Some(d) = d else { panic!("date") };
        assert_eq!(
            to_value("a", &ColumnData::I32(Some(5))).ok(),
            Some(SqlValue::Int(5))
        );
        assert_eq!(
            to_value("a", &ColumnData::U8(None)).ok(),
            Some(SqlValue::Null)
        );
        assert_eq!(
            to_value("a", &ColumnData::Bit(Some(true))).ok(),
            Some(SqlValue::Bool(true))
        );
        assert_eq!(
            to_value("a", &ColumnData::Binary(Some(vec![0xde, 0xad].into()))).ok(),
            Some(SqlValue::Text("dead".into()))
        );
        let dt2 = tiberius::IntoSql::into_sql(d);
        assert_eq!(to_value("a", &dt2).ok(), Some(SqlValue::DateTime(d)));
        let offset =
            chrono::FixedOffset::east_opt(2 * 3600).map(|o| d.and_local_timezone(o).single());
        let Some(Some(local)) = offset else {
            panic!("offset")
        };
        let dto = tiberius::IntoSql::into_sql(local);
        let utc = d - chrono::Duration::hours(2);
        assert_eq!(to_value("a", &dto).ok(), Some(SqlValue::DateTime(utc)));
    }
}
