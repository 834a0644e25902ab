//! T-SQL built-in functions registered on every SQLite connection.
//!
//! `GETUTCDATE()`, `GETDATE()`, `SYSUTCDATETIME()`, `SYSDATETIMEOFFSET()`,
//! `NEWID()`, `LEN(s)`, `DATEADD(part, n, d)`, `DATEDIFF(part, a, b)`,
//! `DATEPART(part, d)`, `DATENAME(part, d)`, `CONCAT(…)`,
//! `CHARINDEX(find, s[, start])`, plus helpers the translator targets:
//! `tds_left`, `tds_right` (for `LEFT`/`RIGHT`, keywords in SQLite) and the
//! cast helpers `tds_bit`, `tds_datetime2`, `tds_datetimeoffset`, `tds_date`,
//! `tds_time`. `ISNULL` is rewritten to SQLite's `IFNULL`; `LOWER`, `UPPER`,
//! `COALESCE`, `REPLACE`, `SUBSTRING`, `TRIM`, `ABS`, `ROUND`, `IIF` are
//! SQLite's own.
//!
//! Date parts arrive as string literals (the translator quotes the bare
//! word). Conversion failures are reported with a `[tds:NNN]` prefix that the
//! executor turns into SQL Server error NNN.

use crate::types::{
    format_date, format_datetime2, format_datetimeoffset, format_time, parse_datetime, parse_time,
};
use chrono::{
    DateTime, Datelike, Duration, FixedOffset, Months, NaiveDateTime, Offset, Timelike, Utc,
};
use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::{Value, ValueRef};
use rusqlite::Connection;

/// Error raised inside a function; `number` becomes the SQL Server error.
#[derive(Debug, thiserror::Error)]
#[error("[tds:{number}] {message}")]
pub struct FunctionError {
    number: u32,
    message: String,
}

fn fail<T>(number: u32, message: impl Into<String>) -> rusqlite::Result<T> {
    Err(rusqlite::Error::UserFunctionError(Box::new(
        FunctionError {
            number,
            message: message.into(),
        },
    )))
}

/// Extracts `(number, message)` from a SQLite error message produced by
/// [`FunctionError`].
pub fn parse_function_error(msg: &str) -> Option<(u32, String)> {
    let rest = msg.strip_prefix("[tds:")?;
    let (num, message) = rest.split_once("] ")?;
    Some((num.parse().ok()?, message.to_string()))
}

fn text_arg(ctx: &Context<'_>, i: usize) -> Option<String> {
    if i >= ctx.len() {
        return None;
    }
    match ctx.get_raw(i) {
        ValueRef::Null => None,
        ValueRef::Integer(v) => Some(v.to_string()),
        ValueRef::Real(v) => Some(crate::types::display_value(&Value::Real(v))),
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
    }
}

fn int_arg(ctx: &Context<'_>, i: usize) -> rusqlite::Result<Option<i64>> {
    if i >= ctx.len() {
        return Ok(None);
    }
    match ctx.get_raw(i) {
        ValueRef::Null => Ok(None),
        ValueRef::Integer(v) => Ok(Some(v)),
        ValueRef::Real(v) => Ok(Some(v.trunc() as i64)),
        ValueRef::Text(t) => match std::str::from_utf8(t)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            Some(v) => Ok(Some(v)),
            None => fail(
                245,
                "Conversion failed when converting a character string to data type int.",
            ),
        },
        ValueRef::Blob(_) => fail(
            206,
            "Operand type clash: varbinary is incompatible with int",
        ),
    }
}

/// A parsed date argument: local date-time and optional offset.
type DateArg = (NaiveDateTime, Option<FixedOffset>);

fn date_arg(ctx: &Context<'_>, i: usize) -> rusqlite::Result<Option<DateArg>> {
    let Some(s) = text_arg(ctx, i) else {
        return Ok(None);
    };
    match parse_datetime(&s) {
        Some(v) => Ok(Some(v)),
        None => match parse_time(s.trim()) {
            Some(t) => Ok(Some((
                chrono::NaiveDate::from_ymd_opt(1900, 1, 1)
                    .unwrap_or_default()
                    .and_time(t),
                None,
            ))),
            None => fail(
                241,
                format!("Conversion failed when converting date and/or time from character string ('{s}')."),
            ),
        },
    }
}

fn format_date_arg((dt, offset): DateArg) -> String {
    match offset.and_then(|o| dt.and_local_timezone(o).single()) {
        Some(d) => format_datetimeoffset(&d),
        None => format_datetime2(&dt),
    }
}

fn now_utc() -> NaiveDateTime {
    Utc::now().naive_utc()
}

/// Canonical date part name.
fn datepart_name(part: &str) -> Option<&'static str> {
    Some(match part.trim().to_ascii_lowercase().as_str() {
        "year" | "yy" | "yyyy" => "year",
        "quarter" | "qq" | "q" => "quarter",
        "month" | "mm" | "m" => "month",
        "dayofyear" | "dy" | "y" => "dayofyear",
        "day" | "dd" | "d" => "day",
        "week" | "wk" | "ww" => "week",
        "weekday" | "dw" | "w" => "weekday",
        "hour" | "hh" => "hour",
        "minute" | "mi" | "n" => "minute",
        "second" | "ss" | "s" => "second",
        "millisecond" | "ms" => "millisecond",
        "microsecond" | "mcs" => "microsecond",
        "nanosecond" | "ns" => "nanosecond",
        "tzoffset" | "tz" => "tzoffset",
        _ => return None,
    })
}

fn part_arg(ctx: &Context<'_>, func: &str) -> rusqlite::Result<&'static str> {
    let raw = text_arg(ctx, 0).unwrap_or_default();
    match datepart_name(&raw) {
        Some(p) => Ok(p),
        None => fail(155, format!("'{raw}' is not a recognized {func} option.")),
    }
}

fn dateadd(part: &str, n: i64, dt: NaiveDateTime) -> Option<NaiveDateTime> {
    let months = |m: i64| -> Option<NaiveDateTime> {
        let abs = Months::new(u32::try_from(m.unsigned_abs()).ok()?);
        if m >= 0 {
            dt.checked_add_months(abs)
        } else {
            dt.checked_sub_months(abs)
        }
    };
    match part {
        "year" => months(n.checked_mul(12)?),
        "quarter" => months(n.checked_mul(3)?),
        "month" => months(n),
        "dayofyear" | "day" | "weekday" => dt.checked_add_signed(Duration::try_days(n)?),
        "week" => dt.checked_add_signed(Duration::try_days(n.checked_mul(7)?)?),
        "hour" => dt.checked_add_signed(Duration::try_hours(n)?),
        "minute" => dt.checked_add_signed(Duration::try_minutes(n)?),
        "second" => dt.checked_add_signed(Duration::try_seconds(n)?),
        "millisecond" => dt.checked_add_signed(Duration::try_milliseconds(n)?),
        "microsecond" => dt.checked_add_signed(Duration::microseconds(n)),
        "nanosecond" => dt.checked_add_signed(Duration::nanoseconds(n)),
        _ => None,
    }
}

fn to_utc((dt, offset): DateArg) -> NaiveDateTime {
    match offset {
        Some(o) => dt
            .checked_sub_signed(Duration::seconds(i64::from(o.local_minus_utc())))
            .unwrap_or(dt),
        None => dt,
    }
}

fn nanos_since_epoch(dt: &NaiveDateTime) -> i128 {
    let utc = dt.and_utc();
    i128::from(utc.timestamp()) * 1_000_000_000 + i128::from(utc.timestamp_subsec_nanos())
}

fn sunday_week_index(dt: &NaiveDateTime) -> i64 {
    // 0001-01-01 is a Monday with num_days_from_ce() == 1, so weeks that
    // start on Sunday change index when num_days_from_ce() is a multiple of 7.
    i64::from(dt.date().num_days_from_ce()).div_euclid(7)
}

fn datediff(part: &str, a: NaiveDateTime, b: NaiveDateTime) -> Option<i64> {
    let months = |d: &NaiveDateTime| i64::from(d.year()) * 12 + i64::from(d.month0());
    let units = |unit: i128| -> Option<i64> {
        i64::try_from(
            nanos_since_epoch(&b).div_euclid(unit) - nanos_since_epoch(&a).div_euclid(unit),
        )
        .ok()
    };
    match part {
        "year" => Some(i64::from(b.year() - a.year())),
        "quarter" => Some(
            (i64::from(b.year()) * 4 + i64::from(b.month0() / 3))
                - (i64::from(a.year()) * 4 + i64::from(a.month0() / 3)),
        ),
        "month" => Some(months(&b) - months(&a)),
        "dayofyear" | "day" | "weekday" => Some(i64::from(
            b.date().num_days_from_ce() - a.date().num_days_from_ce(),
        )),
        "week" => Some(sunday_week_index(&b) - sunday_week_index(&a)),
        "hour" => units(3_600_000_000_000),
        "minute" => units(60_000_000_000),
        "second" => units(1_000_000_000),
        "millisecond" => units(1_000_000),
        "microsecond" => units(1_000),
        "nanosecond" => units(1),
        _ => None,
    }
}

fn datepart(part: &str, (dt, offset): DateArg) -> Option<i64> {
    Some(match part {
        "year" => i64::from(dt.year()),
        "quarter" => i64::from(dt.month0() / 3 + 1),
        "month" => i64::from(dt.month()),
        "dayofyear" => i64::from(dt.ordinal()),
        "day" => i64::from(dt.day()),
        "week" => {
            let jan1 = dt.date().with_ordinal(1)?.and_time(chrono::NaiveTime::MIN);
            sunday_week_index(&dt) - sunday_week_index(&jan1) + 1
        }
        "weekday" => i64::from(dt.weekday().num_days_from_sunday() + 1),
        "hour" => i64::from(dt.hour()),
        "minute" => i64::from(dt.minute()),
        "second" => i64::from(dt.second()),
        "millisecond" => i64::from(dt.nanosecond() / 1_000_000),
        "microsecond" => i64::from(dt.nanosecond() / 1_000),
        "nanosecond" => i64::from(dt.nanosecond()),
        "tzoffset" => i64::from(offset.map_or(0, |o| o.local_minus_utc() / 60)),
        _ => return None,
    })
}

fn bit_value(v: ValueRef<'_>) -> rusqlite::Result<Value> {
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i64::from(i != 0)),
        ValueRef::Real(f) => Value::Integer(i64::from(f != 0.0)),
        ValueRef::Text(t) => {
            let s = String::from_utf8_lossy(t).trim().to_ascii_lowercase();
            match s.as_str() {
                "true" => Value::Integer(1),
                "false" => Value::Integer(0),
                _ => match s.parse::<f64>() {
                    Ok(f) => Value::Integer(i64::from(f != 0.0)),
                    Err(_) => {
                        return fail(
                            245,
                            format!("Conversion failed when converting the nvarchar value '{s}' to data type bit."),
                        )
                    }
                },
            }
        }
        ValueRef::Blob(b) => Value::Integer(i64::from(b.iter().any(|x| *x != 0))),
    })
}

fn register_dates(
    conn: &Connection,
    volatile: FunctionFlags,
    pure: FunctionFlags,
) -> rusqlite::Result<()> {
    for name in [
        "GETUTCDATE",
        "GETDATE",
        "SYSUTCDATETIME",
        "CURRENT_TIMESTAMP_UTC",
    ] {
        conn.create_scalar_function(name, 0, volatile, |_| Ok(format_datetime2(&now_utc())))?;
    }
    conn.create_scalar_function("SYSDATETIMEOFFSET", 0, volatile, |_| {
        let now: DateTime<FixedOffset> = Utc::now().with_timezone(&Utc.fix());
        Ok(format_datetimeoffset(&now))
    })?;
    conn.create_scalar_function("DATEADD", 3, pure, |ctx| {
        let part = part_arg(ctx, "dateadd")?;
        let (Some(n), Some(date)) = (int_arg(ctx, 1)?, date_arg(ctx, 2)?) else {
            return Ok(None);
        };
        match dateadd(part, n, date.0) {
            Some(dt) => Ok(Some(format_date_arg((dt, date.1)))),
            None => fail(
                517,
                "Adding a value to a 'datetime2' column caused an overflow.",
            ),
        }
    })?;
    conn.create_scalar_function("DATEDIFF", 3, pure, |ctx| {
        let part = part_arg(ctx, "datediff")?;
        let (Some(a), Some(b)) = (date_arg(ctx, 1)?, date_arg(ctx, 2)?) else {
            return Ok(None);
        };
        match datediff(part, to_utc(a), to_utc(b)) {
            Some(v) => Ok(Some(v)),
            None => fail(535, "The datediff function resulted in an overflow."),
        }
    })?;
    conn.create_scalar_function("DATEPART", 2, pure, |ctx| {
        let part = part_arg(ctx, "datepart")?;
        let Some(d) = date_arg(ctx, 1)? else {
            return Ok(None);
        };
        Ok(datepart(part, d))
    })?;
    conn.create_scalar_function("DATENAME", 2, pure, |ctx| {
        let part = part_arg(ctx, "datename")?;
        let Some(d) = date_arg(ctx, 1)? else {
            return Ok(None);
        };
        Ok(match part {
            "month" => Some(d.0.format("%B").to_string()),
            "weekday" => Some(d.0.format("%A").to_string()),
            _ => datepart(part, d).map(|v| v.to_string()),
        })
    })?;
    Ok(())
}

fn register_casts(conn: &Connection, pure: FunctionFlags) -> rusqlite::Result<()> {
    conn.create_scalar_function("tds_bit", 1, pure, |ctx| bit_value(ctx.get_raw(0)))?;
    conn.create_scalar_function("tds_datetime2", 1, pure, |ctx| {
        Ok(date_arg(ctx, 0)?.map(|(dt, _)| format_datetime2(&dt)))
    })?;
    conn.create_scalar_function("tds_datetimeoffset", 1, pure, |ctx| {
        Ok(
            date_arg(ctx, 0)?
                .map(|(dt, off)| format_date_arg((dt, Some(off.unwrap_or(Utc.fix()))))),
        )
    })?;
    conn.create_scalar_function("tds_date", 1, pure, |ctx| {
        Ok(date_arg(ctx, 0)?.map(|(dt, _)| format_date(&dt.date())))
    })?;
    conn.create_scalar_function("tds_time", 1, pure, |ctx| {
        Ok(date_arg(ctx, 0)?.map(|(dt, _)| format_time(&dt.time())))
    })?;
    Ok(())
}

fn register_strings(conn: &Connection, pure: FunctionFlags) -> rusqlite::Result<()> {
    conn.create_scalar_function("LEN", 1, pure, |ctx| {
        Ok(text_arg(ctx, 0).map(|s| s.trim_end_matches(' ').chars().count() as i64))
    })?;
    conn.create_scalar_function("CONCAT", -1, pure, |ctx| {
        let mut out = String::new();
        for i in 0..ctx.len() {
            out.push_str(&text_arg(ctx, i).unwrap_or_default());
        }
        Ok(out)
    })?;
    for n_args in [2, 3] {
        conn.create_scalar_function("CHARINDEX", n_args, pure, |ctx| {
            let (Some(find), Some(s)) = (text_arg(ctx, 0), text_arg(ctx, 1)) else {
                return Ok(None);
            };
            let start = int_arg(ctx, 2)?.unwrap_or(1).max(1) as usize;
            let hay: Vec<char> = s.to_lowercase().chars().collect();
            let needle: Vec<char> = find.to_lowercase().chars().collect();
            if needle.is_empty() || start > hay.len() {
                return Ok(Some(0i64));
            }
            let pos = (start - 1..=hay.len().saturating_sub(needle.len()))
                .find(|i| hay[*i..].starts_with(&needle))
                .map_or(0, |i| i as i64 + 1);
            Ok(Some(pos))
        })?;
    }
    conn.create_scalar_function("tds_left", 2, pure, |ctx| {
        let (Some(s), Some(n)) = (text_arg(ctx, 0), int_arg(ctx, 1)?) else {
            return Ok(None);
        };
        Ok(Some(s.chars().take(n.max(0) as usize).collect::<String>()))
    })?;
    conn.create_scalar_function("tds_right", 2, pure, |ctx| {
        let (Some(s), Some(n)) = (text_arg(ctx, 0), int_arg(ctx, 1)?) else {
            return Ok(None);
        };
        let count = s.chars().count();
        Ok(Some(
            s.chars()
                .skip(count.saturating_sub(n.max(0) as usize))
                .collect::<String>(),
        ))
    })?;
    Ok(())
}

/// Registers every function on `conn`.
pub fn register(conn: &Connection) -> rusqlite::Result<()> {
    let base = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_INNOCUOUS;
    let pure = base | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("NEWID", 0, base, |_| {
        Ok(uuid::Uuid::new_v4().hyphenated().to_string())
    })?;
    register_dates(conn, base, pure)?;
    register_casts(conn, pure)?;
    register_strings(conn, pure)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(conn: &Connection, sql: &str) -> Value {
        conn.query_row(sql, [], |r| r.get::<_, Value>(0)).unwrap()
    }

    #[test]
    fn functions_behave_like_sql_server() {
        let conn = Connection::open_in_memory().unwrap();
        register(&conn).unwrap();
        let Value::Text(id) = one(&conn, "SELECT NEWID()") else {
            panic!()
        };
        assert!(uuid::Uuid::parse_str(&id).is_ok());
        let Value::Text(now) = one(&conn, "SELECT GETUTCDATE()") else {
            panic!()
        };
        assert!(parse_datetime(&now).is_some());
        assert_eq!(one(&conn, "SELECT LEN('ab  ')"), Value::Integer(2));
        assert_eq!(
            one(&conn, "SELECT DATEADD('minute', 90, '2024-01-31 23:00:00')"),
            Value::Text("2024-02-01 00:30:00.0000000".into())
        );
        assert_eq!(
            one(&conn, "SELECT DATEADD('month', 1, '2024-01-31')"),
            Value::Text("2024-02-29 00:00:00.0000000".into())
        );
        assert_eq!(
            one(
                &conn,
                "SELECT DATEDIFF('second', '2024-01-01 10:00:59.9', '2024-01-01 10:01:00')"
            ),
            Value::Integer(1)
        );
        assert_eq!(
            one(
                &conn,
                "SELECT DATEDIFF('minute', '2024-01-01 10:00:00', '2024-01-01 09:58:30')"
            ),
            Value::Integer(-2)
        );
        assert_eq!(
            one(&conn, "SELECT DATEPART('weekday', '2024-06-02')"),
            Value::Integer(1)
        );
        assert_eq!(
            one(&conn, "SELECT CONCAT('a', NULL, 1, 2.5)"),
            Value::Text("a12.5".into())
        );
        assert_eq!(
            one(&conn, "SELECT CHARINDEX('B', 'abcb', 3)"),
            Value::Integer(4)
        );
        assert_eq!(
            one(
                &conn,
                "SELECT tds_left('hello', 2) || tds_right('hello', 3)"
            ),
            Value::Text("hello".into())
        );
        assert_eq!(one(&conn, "SELECT tds_bit('true')"), Value::Integer(1));
        assert_eq!(
            one(&conn, "SELECT tds_datetime2('2024-01-01T10:00:00Z')"),
            Value::Text("2024-01-01 10:00:00.0000000".into())
        );
        let err = conn
            .query_row("SELECT tds_datetime2('nope')", [], |r| r.get::<_, Value>(0))
            .unwrap_err();
        let (n, _) = parse_function_error(&err.to_string()).unwrap();
        assert_eq!(n, 241);
        let err = conn
            .query_row("SELECT DATEADD('fortnight', 1, '2024-01-01')", [], |r| {
                r.get::<_, Value>(0)
            })
            .unwrap_err();
        assert_eq!(parse_function_error(&err.to_string()).unwrap().0, 155);
    }
}
