//! SQL Server column types of result sets, and conversion of SQLite values.
//!
//! SQLite stores everything as INTEGER, REAL, TEXT, BLOB or NULL. The TDS
//! result type of a column is chosen, in order, from
//!
//! 1. a *hint* from the T-SQL text (`CAST(x AS UNIQUEIDENTIFIER)`, a bare
//!    `@P1` parameter, `NEWID()`, `GETUTCDATE()`, `COUNT(*)`, …),
//! 2. the column's *declared type* in the SQLite schema
//!    (`Statement::columns()` decl type) — see [`ColType::from_decl`],
//! 3. *inference* from the values of the whole result set — see [`infer`].
//!
//! Integer columns are widened when a value does not fit (an `INT` column
//! holding 2^40 is sent as `BIGINT`), strings longer than 4000 UTF-16 units
//! switch to `NVARCHAR(MAX)` and binaries over 8000 bytes to `VARBINARY(MAX)`.
//!
//! Text representations used for storage (and therefore for parameters):
//! GUIDs are lowercase hyphenated text, `DATETIME2` is
//! `YYYY-MM-DD HH:MM:SS.fffffff`, `DATETIMEOFFSET` is the local time followed
//! by ` +HH:MM`, `DATE` is `YYYY-MM-DD`, `TIME` is `HH:MM:SS.fffffff`, BIT is
//! 0/1.

use crate::error::SqlError;
use chrono::{
    DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Offset, Timelike,
};
use rusqlite::types::Value;
use uuid::Uuid;

/// The TDS type a result column is sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    /// `TINYINT` (INTN 1), read as `u8`.
    TinyInt,
    /// `SMALLINT` (INTN 2), read as `i16`.
    SmallInt,
    /// `INT` (INTN 4), read as `i32`.
    Int,
    /// `BIGINT` (INTN 8), read as `i64`.
    BigInt,
    /// `BIT` (BITN), read as `bool`.
    Bit,
    /// `FLOAT` (FLTN 8), read as `f64`.
    Float,
    /// `UNIQUEIDENTIFIER` (GUIDTYPE), read as `Uuid`.
    Guid,
    /// `DATETIME2(7)`, read as `NaiveDateTime`.
    DateTime2,
    /// `DATETIMEOFFSET(7)`, read as `DateTime<FixedOffset>`.
    DateTimeOffset,
    /// `DATE`, read as `NaiveDate`.
    Date,
    /// `TIME(7)`, read as `NaiveTime`.
    Time,
    /// `NVARCHAR(4000)`, read as `&str`/`String`.
    NVarChar,
    /// `NVARCHAR(MAX)` (PLP), read as `&str`/`String`.
    NVarCharMax,
    /// `VARBINARY(8000)`, read as `&[u8]`.
    VarBinary,
    /// `VARBINARY(MAX)` (PLP), read as `&[u8]`.
    VarBinaryMax,
}

impl ColType {
    /// Maps a declared SQL type (SQLite decl type or T-SQL type name) to a
    /// TDS column type. `None` means "no usable declaration: infer".
    pub fn from_decl(decl: &str) -> Option<ColType> {
        let upper = decl.trim().to_ascii_uppercase();
        let base = upper
            .split('(')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches(|c| c == '[' || c == ']' || c == '"');
        let exact = match base {
            "TINYINT" => Some(ColType::TinyInt),
            "SMALLINT" => Some(ColType::SmallInt),
            "INT" | "INTEGER" | "MEDIUMINT" => Some(ColType::Int),
            "BIGINT" | "INT8" => Some(ColType::BigInt),
            "BIT" | "BOOL" | "BOOLEAN" => Some(ColType::Bit),
            "FLOAT" | "REAL" | "DOUBLE" | "DOUBLE PRECISION" | "DECIMAL" | "NUMERIC" | "MONEY"
            | "SMALLMONEY" => Some(ColType::Float),
            "UNIQUEIDENTIFIER" | "UUID" | "GUID" => Some(ColType::Guid),
            "DATETIME2" | "DATETIME" | "SMALLDATETIME" | "TIMESTAMP" => Some(ColType::DateTime2),
            "DATETIMEOFFSET" => Some(ColType::DateTimeOffset),
            "DATE" => Some(ColType::Date),
            "TIME" => Some(ColType::Time),
            "VARBINARY" | "BINARY" | "BLOB" | "IMAGE" | "ROWVERSION" => Some(ColType::VarBinary),
            "NVARCHAR" | "VARCHAR" | "CHAR" | "NCHAR" | "TEXT" | "NTEXT" | "CLOB" | "SYSNAME"
            | "XML" | "STRING" => Some(ColType::NVarChar),
            _ => None,
        };
        if exact.is_some() {
            return exact;
        }
        // SQLite's own affinity rules as a fallback.
        if base.contains("INT") {
            Some(ColType::Int)
        } else if base.contains("CHAR") || base.contains("CLOB") || base.contains("TEXT") {
            Some(ColType::NVarChar)
        } else if base.contains("BLOB") || base.contains("BINARY") {
            Some(ColType::VarBinary)
        } else if base.contains("REAL") || base.contains("FLOA") || base.contains("DOUB") {
            Some(ColType::Float)
        } else {
            None
        }
    }

    /// The T-SQL name, for messages.
    pub fn sql_name(self) -> &'static str {
        match self {
            ColType::TinyInt => "tinyint",
            ColType::SmallInt => "smallint",
            ColType::Int => "int",
            ColType::BigInt => "bigint",
            ColType::Bit => "bit",
            ColType::Float => "float",
            ColType::Guid => "uniqueidentifier",
            ColType::DateTime2 => "datetime2",
            ColType::DateTimeOffset => "datetimeoffset",
            ColType::Date => "date",
            ColType::Time => "time",
            ColType::NVarChar => "nvarchar(4000)",
            ColType::NVarCharMax => "nvarchar(max)",
            ColType::VarBinary => "varbinary(8000)",
            ColType::VarBinaryMax => "varbinary(max)",
        }
    }

    fn is_integer(self) -> bool {
        matches!(
            self,
            ColType::TinyInt | ColType::SmallInt | ColType::Int | ColType::BigInt
        )
    }
}

/// A converted value, ready to be encoded in a ROW token.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// NULL.
    Null,
    /// Any integer type.
    Int(i64),
    /// BIT.
    Bit(bool),
    /// FLOAT.
    Float(f64),
    /// UNIQUEIDENTIFIER.
    Guid(Uuid),
    /// DATETIME2.
    DateTime2(NaiveDateTime),
    /// DATETIMEOFFSET.
    DateTimeOffset(DateTime<FixedOffset>),
    /// DATE.
    Date(NaiveDate),
    /// TIME.
    Time(NaiveTime),
    /// NVARCHAR.
    Str(String),
    /// VARBINARY.
    Bin(Vec<u8>),
}

/// Infers a column type from the values of a result set column.
pub fn infer<'a>(values: impl Iterator<Item = &'a Value>) -> ColType {
    let (mut ints, mut reals, mut texts, mut blobs) = (0usize, 0usize, 0usize, 0usize);
    let (mut all_guid, mut all_dt, mut all_dto) = (true, true, true);
    let mut big = false;
    for v in values {
        match v {
            Value::Null => {}
            Value::Integer(i) => {
                ints += 1;
                if i32::try_from(*i).is_err() {
                    big = true;
                }
            }
            Value::Real(_) => reals += 1,
            Value::Text(s) => {
                texts += 1;
                if all_guid && !looks_like_guid(s) {
                    all_guid = false;
                }
                match parse_datetime(s) {
                    Some((_, Some(_))) if s.len() > 10 => all_dt = false,
                    Some((_, None)) if s.len() > 10 => all_dto = false,
                    _ => {
                        all_dt = false;
                        all_dto = false;
                    }
                }
            }
            Value::Blob(_) => blobs += 1,
        }
    }
    if blobs > 0 {
        return if ints + reals + texts == 0 {
            ColType::VarBinary
        } else {
            ColType::NVarChar
        };
    }
    if texts > 0 {
        if ints + reals > 0 {
            return ColType::NVarChar;
        }
        if all_guid {
            return ColType::Guid;
        }
        if all_dt {
            return ColType::DateTime2;
        }
        if all_dto {
            return ColType::DateTimeOffset;
        }
        return ColType::NVarChar;
    }
    if reals > 0 {
        return ColType::Float;
    }
    if ints > 0 {
        return if big { ColType::BigInt } else { ColType::Int };
    }
    ColType::NVarChar
}

fn looks_like_guid(s: &str) -> bool {
    s.len() == 36 && Uuid::parse_str(s).is_ok()
}

/// Converts one SQLite value to a cell of column type `ty`.
pub fn to_cell(ty: ColType, v: &Value) -> Result<Cell, SqlError> {
    if matches!(v, Value::Null) {
        return Ok(Cell::Null);
    }
    let fail = |what: &str| {
        Err(SqlError::new(
            245,
            format!(
                "Conversion failed when converting the {what} value '{}' to data type {}.",
                display_value(v),
                ty.sql_name()
            ),
        ))
    };
    match ty {
        ColType::TinyInt | ColType::SmallInt | ColType::Int | ColType::BigInt => match v {
            Value::Integer(i) => Ok(Cell::Int(*i)),
            Value::Real(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(Cell::Int(*f as i64)),
            Value::Text(s) => match s.trim().parse::<i64>() {
                Ok(i) => Ok(Cell::Int(i)),
                Err(_) => fail("nvarchar"),
            },
            _ => fail("varbinary"),
        },
        ColType::Bit => match v {
            Value::Integer(i) => Ok(Cell::Bit(*i != 0)),
            Value::Real(f) => Ok(Cell::Bit(*f != 0.0)),
            Value::Text(s) => match s.trim().to_ascii_lowercase().as_str() {
                "1" | "true" => Ok(Cell::Bit(true)),
                "0" | "false" => Ok(Cell::Bit(false)),
                _ => fail("nvarchar"),
            },
            _ => fail("varbinary"),
        },
        ColType::Float => match v {
            Value::Integer(i) => Ok(Cell::Float(*i as f64)),
            Value::Real(f) => Ok(Cell::Float(*f)),
            Value::Text(s) => match s.trim().parse::<f64>() {
                Ok(f) => Ok(Cell::Float(f)),
                Err(_) => fail("nvarchar"),
            },
            _ => fail("varbinary"),
        },
        ColType::Guid => match v {
            Value::Text(s) => match Uuid::parse_str(s.trim()) {
                Ok(u) => Ok(Cell::Guid(u)),
                Err(_) => Err(SqlError::new(
                    8169,
                    format!(
                        "Conversion failed when converting from a character string to uniqueidentifier ('{s}')."
                    ),
                )),
            },
            Value::Blob(b) if b.len() == 16 => {
                let mut bytes = [0u8; 16];
                bytes.copy_from_slice(b);
                Ok(Cell::Guid(Uuid::from_bytes(bytes)))
            }
            _ => fail("number"),
        },
        ColType::DateTime2 | ColType::DateTimeOffset | ColType::Date | ColType::Time => {
            let Value::Text(s) = v else {
                return fail("number");
            };
            if ty == ColType::Time {
                return match parse_time(s.trim()) {
                    Some(t) => Ok(Cell::Time(t)),
                    None => Err(datetime_conversion_error(s)),
                };
            }
            let Some((dt, offset)) = parse_datetime(s) else {
                return Err(datetime_conversion_error(s));
            };
            Ok(match ty {
                ColType::DateTime2 => Cell::DateTime2(dt),
                ColType::Date => Cell::Date(dt.date()),
                _ => {
                    let offset = offset.unwrap_or_else(utc_offset);
                    match dt.and_local_timezone(offset).single() {
                        Some(d) => Cell::DateTimeOffset(d),
                        None => return Err(datetime_conversion_error(s)),
                    }
                }
            })
        }
        ColType::NVarChar | ColType::NVarCharMax => Ok(Cell::Str(display_value(v))),
        ColType::VarBinary | ColType::VarBinaryMax => match v {
            Value::Blob(b) => Ok(Cell::Bin(b.clone())),
            Value::Text(s) => Ok(Cell::Bin(s.as_bytes().to_vec())),
            Value::Integer(i) => Ok(Cell::Bin(i.to_be_bytes().to_vec())),
            _ => fail("float"),
        },
    }
}

/// Widens a column type so that every converted cell fits.
pub fn widen(ty: ColType, cells: impl Iterator<Item = Cell>) -> ColType {
    let mut ty = ty;
    for cell in cells {
        match (&cell, ty) {
            (Cell::Int(i), t) if t.is_integer() => {
                let needed = if (0..=255).contains(i) {
                    ColType::TinyInt
                } else if i16::try_from(*i).is_ok() {
                    ColType::SmallInt
                } else if i32::try_from(*i).is_ok() {
                    ColType::Int
                } else {
                    ColType::BigInt
                };
                if int_rank(needed) > int_rank(ty) {
                    ty = needed;
                }
            }
            (Cell::Str(s), ColType::NVarChar) if s.encode_utf16().count() > 4000 => {
                ty = ColType::NVarCharMax;
            }
            (Cell::Bin(b), ColType::VarBinary) if b.len() > 8000 => ty = ColType::VarBinaryMax,
            _ => {}
        }
    }
    ty
}

fn int_rank(t: ColType) -> u8 {
    match t {
        ColType::TinyInt => 1,
        ColType::SmallInt => 2,
        ColType::Int => 3,
        ColType::BigInt => 4,
        _ => 0,
    }
}

fn datetime_conversion_error(s: &str) -> SqlError {
    SqlError::new(
        241,
        format!(
            "Conversion failed when converting date and/or time from character string ('{s}')."
        ),
    )
}

fn utc_offset() -> FixedOffset {
    chrono::Utc.fix()
}

/// Renders a value as SQL Server would convert it to NVARCHAR.
pub fn display_value(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Integer(i) => i.to_string(),
        Value::Real(f) => {
            if f.fract() == 0.0 && f.abs() < 1e15 {
                format!("{f:.0}")
            } else {
                f.to_string()
            }
        }
        Value::Text(s) => s.clone(),
        Value::Blob(b) => {
            let mut s = String::from("0x");
            for byte in b {
                s.push_str(&format!("{byte:02X}"));
            }
            s
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS.fffffff`.
pub fn format_datetime2(dt: &NaiveDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {}",
        dt.year(),
        dt.month(),
        dt.day(),
        format_time(&dt.time())
    )
}

/// `HH:MM:SS.fffffff`.
pub fn format_time(t: &NaiveTime) -> String {
    format!(
        "{:02}:{:02}:{:02}.{:07}",
        t.hour(),
        t.minute(),
        t.second(),
        (t.nanosecond() % 1_000_000_000) / 100
    )
}

/// `YYYY-MM-DD`.
pub fn format_date(d: &NaiveDate) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
}

/// Local time then ` +HH:MM`.
pub fn format_datetimeoffset(dt: &DateTime<FixedOffset>) -> String {
    let secs = dt.offset().local_minus_utc();
    let sign = if secs < 0 { '-' } else { '+' };
    let abs = secs.unsigned_abs();
    format!(
        "{} {sign}{:02}:{:02}",
        format_datetime2(&dt.naive_local()),
        abs / 3600,
        (abs % 3600) / 60
    )
}

/// Parses `HH:MM[:SS[.fffffffff]]`.
pub fn parse_time(s: &str) -> Option<NaiveTime> {
    let b = s.as_bytes();
    if b.len() < 5 || b.get(2) != Some(&b':') {
        return None;
    }
    let hour = digits(b, 0, 2)?;
    let minute = digits(b, 3, 2)?;
    let mut pos = 5;
    let mut second = 0;
    let mut nanos = 0u32;
    if b.get(pos) == Some(&b':') {
        second = digits(b, pos + 1, 2)?;
        pos += 3;
        if b.get(pos) == Some(&b'.') {
            pos += 1;
            let start = pos;
            while pos < b.len() && b[pos].is_ascii_digit() {
                pos += 1;
            }
            let frac = &s[start..pos];
            if frac.is_empty() {
                return None;
            }
            let mut padded: String = frac.chars().take(9).collect();
            while padded.len() < 9 {
                padded.push('0');
            }
            nanos = padded.parse().ok()?;
        }
    }
    if pos != b.len() {
        return None;
    }
    NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)
}

/// Parses `YYYY-MM-DD[( |T)HH:MM[:SS[.f…]]][Z| ±HH:MM|±HHMM]`, returning
/// the local date-time and the offset when one was present.
pub fn parse_datetime(s: &str) -> Option<(NaiveDateTime, Option<FixedOffset>)> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let date =
        NaiveDate::from_ymd_opt(digits(b, 0, 4)? as i32, digits(b, 5, 2)?, digits(b, 8, 2)?)?;
    let rest = &s[10..];
    if rest.is_empty() {
        return Some((date.and_time(NaiveTime::MIN), None));
    }
    let rest = rest.strip_prefix(['T', ' '])?;
    // Split off an offset: 'Z', or a '+'/'-' after the time part.
    let (time_part, offset) = if let Some(t) = rest.strip_suffix('Z') {
        (t.trim_end(), Some(utc_offset()))
    } else if let Some(idx) = rest.rfind(['+', '-']) {
        let (t, off) = rest.split_at(idx);
        (t.trim_end(), Some(parse_offset(off)?))
    } else {
        (rest, None)
    };
    let time = parse_time(time_part)?;
    Some((date.and_time(time), offset))
}

fn parse_offset(s: &str) -> Option<FixedOffset> {
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let body: String = s[1..].chars().filter(|c| *c != ':').collect();
    if body.len() != 4 {
        return None;
    }
    let b = body.as_bytes();
    let hours = digits(b, 0, 2)? as i32;
    let minutes = digits(b, 2, 2)? as i32;
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

fn digits(b: &[u8], start: usize, len: usize) -> Option<u32> {
    let slice = b.get(start..start + len)?;
    let mut n = 0u32;
    for c in slice {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(c - b'0');
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decl_types_map_to_tds_types() {
        assert_eq!(ColType::from_decl("INT"), Some(ColType::Int));
        assert_eq!(ColType::from_decl("integer"), Some(ColType::Int));
        assert_eq!(ColType::from_decl("BIGINT"), Some(ColType::BigInt));
        assert_eq!(ColType::from_decl("UNIQUEIDENTIFIER"), Some(ColType::Guid));
        assert_eq!(ColType::from_decl("DATETIME2(7)"), Some(ColType::DateTime2));
        assert_eq!(
            ColType::from_decl("DATETIMEOFFSET"),
            Some(ColType::DateTimeOffset)
        );
        assert_eq!(ColType::from_decl("NVARCHAR(-1)"), Some(ColType::NVarChar));
        assert_eq!(
            ColType::from_decl("VARBINARY(MAX)"),
            Some(ColType::VarBinary)
        );
        assert_eq!(ColType::from_decl("BIT"), Some(ColType::Bit));
        assert_eq!(ColType::from_decl("FLOAT"), Some(ColType::Float));
        assert_eq!(ColType::from_decl("UNSIGNED BIG INT"), Some(ColType::Int));
        assert_eq!(ColType::from_decl(""), None);
    }

    #[test]
    fn inference_from_values() {
        let v = [Value::Integer(1), Value::Null];
        assert_eq!(infer(v.iter()), ColType::Int);
        let v = [Value::Integer(1 << 40)];
        assert_eq!(infer(v.iter()), ColType::BigInt);
        let v = [Value::Real(1.5), Value::Integer(2)];
        assert_eq!(infer(v.iter()), ColType::Float);
        let v = [Value::Text("x".into())];
        assert_eq!(infer(v.iter()), ColType::NVarChar);
        let v = [Value::Text("6f9619ff-8b86-d011-b42d-00c04fc964ff".into())];
        assert_eq!(infer(v.iter()), ColType::Guid);
        let v = [Value::Text("2024-01-02 03:04:05.1234567".into())];
        assert_eq!(infer(v.iter()), ColType::DateTime2);
        let v = [Value::Text("2024-01-02 03:04:05.1234567 +02:00".into())];
        assert_eq!(infer(v.iter()), ColType::DateTimeOffset);
        let v = [Value::Null];
        assert_eq!(infer(v.iter()), ColType::NVarChar);
    }

    #[test]
    fn datetime_parsing_and_formatting() {
        let (dt, off) = parse_datetime("2024-02-29 23:59:58.1234567").unwrap();
        assert!(off.is_none());
        assert_eq!(format_datetime2(&dt), "2024-02-29 23:59:58.1234567");
        let (dt, _) = parse_datetime("2024-02-29T10:00").unwrap();
        assert_eq!(format_datetime2(&dt), "2024-02-29 10:00:00.0000000");
        let (dt, off) = parse_datetime("2024-02-29 10:00:00 -05:30").unwrap();
        let off = off.unwrap();
        assert_eq!(off.local_minus_utc(), -(5 * 3600 + 30 * 60));
        let dto = dt.and_local_timezone(off).single().unwrap();
        assert_eq!(
            format_datetimeoffset(&dto),
            "2024-02-29 10:00:00.0000000 -05:30"
        );
        assert!(parse_datetime("2024-02-30").is_none());
        assert!(parse_datetime("hello world").is_none());
        assert!(parse_datetime("2024-01-01Z").is_none());
        assert_eq!(parse_time("10:11:12.5").unwrap().nanosecond(), 500_000_000);
    }

    #[test]
    fn conversion_and_widening() {
        assert_eq!(
            to_cell(ColType::Int, &Value::Text("42".into())).unwrap(),
            Cell::Int(42)
        );
        assert_eq!(
            to_cell(ColType::Int, &Value::Text("x".into()))
                .unwrap_err()
                .number,
            245
        );
        assert_eq!(
            to_cell(ColType::Guid, &Value::Text("nope".into()))
                .unwrap_err()
                .number,
            8169
        );
        assert_eq!(
            to_cell(ColType::Bit, &Value::Integer(5)).unwrap(),
            Cell::Bit(true)
        );
        assert_eq!(
            to_cell(ColType::NVarChar, &Value::Real(2.0)).unwrap(),
            Cell::Str("2".into())
        );
        let cells = vec![Cell::Int(1), Cell::Int(1 << 33)];
        assert_eq!(widen(ColType::Int, cells.into_iter()), ColType::BigInt);
        let cells = vec![Cell::Str("x".repeat(4001))];
        assert_eq!(
            widen(ColType::NVarChar, cells.into_iter()),
            ColType::NVarCharMax
        );
        let cells = vec![Cell::Int(300)];
        assert_eq!(
            widen(ColType::TinyInt, cells.into_iter()),
            ColType::SmallInt
        );
    }
}
