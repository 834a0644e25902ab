//! Decoding of SQL_BATCH and RPC request payloads.
//!
//! Both start with an ALL_HEADERS block (total length, then headers such as
//! the transaction descriptor) which is skipped: every TDS connection has its
//! own SQLite connection, so the descriptor carries no information here.
//!
//! An RPC names a procedure (by well-known id or by name) and carries
//! parameters: `B_VARCHAR` name, status flags, `TYPE_INFO`, value. tiberius
//! sends every parameterised query as `sp_executesql` (proc id 10) with
//! `stmt` (NVARCHAR), `params` (the declaration string, e.g.
//! `@P1 int,@P2 nvarchar(4000)`) and then the values `@P1`..`@Pn`.
//!
//! Decoding failures are reported as [`SqlError`] 8009 (like SQL Server's
//! "incoming TDS RPC protocol stream is incorrect"): the message boundary is
//! intact, so the connection stays usable.

use crate::error::{ProtocolError, SqlError};
use crate::types::{format_date, format_datetime2, format_datetimeoffset, format_time, ColType};
use crate::wire::{utf16_to_string, Reader};
use chrono::{DateTime, Duration, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime};
use rusqlite::types::Value;
use uuid::Uuid;

/// Well-known RPC procedure id of `sp_executesql`.
pub const PROC_EXECUTESQL: u16 = 10;

/// A decoded parameter value.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    /// NULL (of any type).
    Null,
    /// Integer types.
    Int(i64),
    /// BIT.
    Bit(bool),
    /// FLOAT, REAL, MONEY, DECIMAL.
    Float(f64),
    /// Character types.
    Str(String),
    /// Binary types.
    Bin(Vec<u8>),
    /// UNIQUEIDENTIFIER.
    Guid(Uuid),
    /// DATETIME2, DATETIME, SMALLDATETIME.
    DateTime2(NaiveDateTime),
    /// DATETIMEOFFSET.
    DateTimeOffset(DateTime<FixedOffset>),
    /// DATE.
    Date(NaiveDate),
    /// TIME.
    Time(NaiveTime),
}

impl ParamValue {
    /// The SQLite value bound for this parameter (see [`crate::types`] for
    /// the text formats).
    pub fn to_sqlite(&self) -> Value {
        match self {
            ParamValue::Null => Value::Null,
            ParamValue::Int(i) => Value::Integer(*i),
            ParamValue::Bit(b) => Value::Integer(i64::from(*b)),
            ParamValue::Float(f) => Value::Real(*f),
            ParamValue::Str(s) => Value::Text(s.clone()),
            ParamValue::Bin(b) => Value::Blob(b.clone()),
            ParamValue::Guid(u) => Value::Text(u.hyphenated().to_string()),
            ParamValue::DateTime2(dt) => Value::Text(format_datetime2(dt)),
            ParamValue::DateTimeOffset(d) => Value::Text(format_datetimeoffset(d)),
            ParamValue::Date(d) => Value::Text(format_date(d)),
            ParamValue::Time(t) => Value::Text(format_time(t)),
        }
    }
}

/// One RPC parameter as sent.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcParam {
    /// Name as sent (may be empty, may or may not start with `@`).
    pub name: String,
    /// fByRefValue (OUTPUT parameter).
    pub by_ref: bool,
    /// The value.
    pub value: ParamValue,
    /// Result type matching the wire type, when known.
    pub wire_type: Option<ColType>,
}

/// Which procedure an RPC calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcRef {
    /// A well-known procedure id.
    Id(u16),
    /// A procedure name.
    Name(String),
}

/// One RPC call.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcRequest {
    /// The procedure.
    pub proc_ref: ProcRef,
    /// Its parameters.
    pub params: Vec<RpcParam>,
}

/// A parameter bound to a statement: `@name` becomes SQLite `?index`.
#[derive(Debug, Clone, PartialEq)]
pub struct BoundParam {
    /// Lowercase name without the leading `@`.
    pub name: String,
    /// Value to bind.
    pub value: Value,
    /// Declared (from `@params`) or wire type.
    pub ty: Option<ColType>,
}

/// An `sp_executesql` call, ready to execute.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecuteSql {
    /// The `@stmt` text.
    pub stmt: String,
    /// Parameters in order (`?1` is the first).
    pub params: Vec<BoundParam>,
}

fn rpc_error(msg: impl std::fmt::Display) -> SqlError {
    SqlError::new(
        8009,
        format!(
            "The incoming tabular data stream (TDS) remote procedure call (RPC) protocol stream is incorrect. {msg}"
        ),
    )
}

/// Skips the ALL_HEADERS block at the start of a SQL_BATCH or RPC payload.
pub fn strip_all_headers(payload: &[u8]) -> Result<&[u8], ProtocolError> {
    let mut r = Reader::new(payload);
    let total = r.u32_le()? as usize;
    if total < 4 || total > payload.len() {
        return Err(ProtocolError::malformed(format!(
            "ALL_HEADERS length {total} does not fit a {}-byte payload",
            payload.len()
        )));
    }
    Ok(&payload[total..])
}

/// Decodes the text of a SQL_BATCH payload (after ALL_HEADERS).
pub fn batch_text(body: &[u8]) -> String {
    utf16_to_string(body)
}

/// Decodes every RPC call of an RPC payload (after ALL_HEADERS).
pub fn parse_rpc(body: &[u8]) -> Result<Vec<RpcRequest>, SqlError> {
    let mut r = Reader::new(body);
    let mut calls = Vec::new();
    loop {
        calls.push(parse_one(&mut r).map_err(rpc_error)?);
        if r.is_empty() {
            return Ok(calls);
        }
        // Batch separators between RPC calls: 0x80 (BatchFlag) or 0xFF (NoExec).
        match r.u8().map_err(rpc_error)? {
            0x80 | 0xFF if !r.is_empty() => {}
            other => {
                return Err(rpc_error(format!(
                    "unexpected byte {other:#04x} after parameters"
                )))
            }
        }
    }
}

fn parse_one(r: &mut Reader<'_>) -> Result<RpcRequest, ProtocolError> {
    let name_len = r.u16_le()?;
    let proc_ref = if name_len == 0xFFFF {
        ProcRef::Id(r.u16_le()?)
    } else {
        ProcRef::Name(r.utf16(name_len as usize)?)
    };
    let _option_flags = r.u16_le()?;
    let mut params = Vec::new();
    while !r.is_empty() && !matches!(r.rest().first(), Some(0x80 | 0xFF)) {
        let name = r.b_varchar()?;
        let status = r.u8()?;
        let (value, wire_type) = parse_typed_value(r)?;
        params.push(RpcParam {
            name,
            by_ref: status & 0x01 != 0,
            value,
            wire_type,
        });
    }
    Ok(RpcRequest { proc_ref, params })
}

fn int_le(bytes: &[u8]) -> i64 {
    let mut buf = [0u8; 8];
    buf[..bytes.len().min(8)].copy_from_slice(&bytes[..bytes.len().min(8)]);
    let v = i64::from_le_bytes(buf);
    // Sign-extend 1/2/4-byte values except TINYINT (unsigned).
    match bytes.len() {
        2 => i64::from(v as i16),
        4 => i64::from(v as i32),
        _ => v,
    }
}

fn read_plp(r: &mut Reader<'_>) -> Result<Option<Vec<u8>>, ProtocolError> {
    let total = r.u64_le()?;
    if total == u64::MAX {
        return Ok(None);
    }
    let mut data = Vec::new();
    loop {
        let chunk = r.u32_le()? as usize;
        if chunk == 0 {
            return Ok(Some(data));
        }
        data.extend_from_slice(r.bytes(chunk)?);
    }
}

fn time_from(bytes: &[u8], scale: u8) -> Result<NaiveTime, ProtocolError> {
    let mut buf = [0u8; 8];
    let n = bytes.len().min(8);
    buf[..n].copy_from_slice(&bytes[..n]);
    let increments = u64::from_le_bytes(buf);
    let scale = u32::from(scale.min(7));
    let nanos = increments.saturating_mul(10u64.pow(9 - scale));
    let secs = (nanos / 1_000_000_000) as u32;
    NaiveTime::from_num_seconds_from_midnight_opt(secs, (nanos % 1_000_000_000) as u32)
        .ok_or_else(|| ProtocolError::malformed("time value out of range"))
}

fn date_from(bytes: &[u8]) -> Result<NaiveDate, ProtocolError> {
    let days = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], 0]);
    NaiveDate::from_num_days_from_ce_opt(days as i32 + 1)
        .ok_or_else(|| ProtocolError::malformed("date value out of range"))
}

fn legacy_datetime(days: i64, seconds: f64) -> Result<NaiveDateTime, ProtocolError> {
    let base = NaiveDate::from_ymd_opt(1900, 1, 1)
        .map(|d| d.and_time(NaiveTime::MIN))
        .ok_or_else(|| ProtocolError::malformed("bad datetime base"))?;
    Duration::try_days(days)
        .and_then(|d| base.checked_add_signed(d))
        .and_then(|d| d.checked_add_signed(Duration::microseconds((seconds * 1e6).round() as i64)))
        .ok_or_else(|| ProtocolError::malformed("datetime value out of range"))
}

fn decimal(bytes: &[u8], scale: u8) -> Result<ParamValue, ProtocolError> {
    let (sign, magnitude) = bytes
        .split_first()
        .ok_or_else(|| ProtocolError::malformed("empty decimal"))?;
    let mut buf = [0u8; 16];
    let n = magnitude.len().min(16);
    buf[..n].copy_from_slice(&magnitude[..n]);
    let m = u128::from_le_bytes(buf);
    let negative = *sign == 0;
    if scale == 0 {
        if let Ok(i) = i64::try_from(m) {
            return Ok(ParamValue::Int(if negative { -i } else { i }));
        }
    }
    let f = m as f64 / 10f64.powi(i32::from(scale));
    Ok(ParamValue::Float(if negative { -f } else { f }))
}

/// Reads a `TYPE_INFO` and the value that follows it.
fn parse_typed_value(r: &mut Reader<'_>) -> Result<(ParamValue, Option<ColType>), ProtocolError> {
    let ty = r.u8()?;
    let v = match ty {
        0x1F => (ParamValue::Null, None),
        0x30 => (ParamValue::Int(i64::from(r.u8()?)), Some(ColType::TinyInt)),
        0x32 => (ParamValue::Bit(r.u8()? != 0), Some(ColType::Bit)),
        0x34 => (
            ParamValue::Int(i64::from(r.i16_le()?)),
            Some(ColType::SmallInt),
        ),
        0x38 => (ParamValue::Int(i64::from(r.i32_le()?)), Some(ColType::Int)),
        0x7F => (ParamValue::Int(r.i64_le()?), Some(ColType::BigInt)),
        0x3B => (
            ParamValue::Float(f64::from(r.f32_le()?)),
            Some(ColType::Float),
        ),
        0x3E => (ParamValue::Float(r.f64_le()?), Some(ColType::Float)),
        0x3C => {
            let hi = i64::from(r.i32_le()?);
            let lo = i64::from(r.u32_le()?);
            (
                ParamValue::Float(((hi << 32) | lo) as f64 / 10_000.0),
                Some(ColType::Float),
            )
        }
        0x7A => (
            ParamValue::Float(f64::from(r.i32_le()?) / 10_000.0),
            Some(ColType::Float),
        ),
        0x3D => {
            let days = i64::from(r.i32_le()?);
            let ticks = r.u32_le()?;
            (
                ParamValue::DateTime2(legacy_datetime(days, f64::from(ticks) / 300.0)?),
                Some(ColType::DateTime2),
            )
        }
        0x3A => {
            let days = i64::from(r.u16_le()?);
            let minutes = r.u16_le()?;
            (
                ParamValue::DateTime2(legacy_datetime(days, f64::from(minutes) * 60.0)?),
                Some(ColType::DateTime2),
            )
        }
        // INTN
        0x26 => {
            let max = r.u8()?;
            let len = r.u8()? as usize;
            let col = match max {
                1 => ColType::TinyInt,
                2 => ColType::SmallInt,
                4 => ColType::Int,
                _ => ColType::BigInt,
            };
            let v = match len {
                0 => ParamValue::Null,
                1 => ParamValue::Int(i64::from(r.u8()?)),
                2 | 4 | 8 => ParamValue::Int(int_le(r.bytes(len)?)),
                _ => return Err(ProtocolError::malformed(format!("INTN length {len}"))),
            };
            (v, Some(col))
        }
        // BITN
        0x68 => {
            let _max = r.u8()?;
            let v = match r.u8()? {
                0 => ParamValue::Null,
                n => ParamValue::Bit(r.bytes(n as usize)?.iter().any(|b| *b != 0)),
            };
            (v, Some(ColType::Bit))
        }
        // FLTN
        0x6D => {
            let _max = r.u8()?;
            let v = match r.u8()? {
                0 => ParamValue::Null,
                4 => ParamValue::Float(f64::from(r.f32_le()?)),
                8 => ParamValue::Float(r.f64_le()?),
                n => return Err(ProtocolError::malformed(format!("FLTN length {n}"))),
            };
            (v, Some(ColType::Float))
        }
        // MONEYN
        0x6E => {
            let _max = r.u8()?;
            let v = match r.u8()? {
                0 => ParamValue::Null,
                4 => ParamValue::Float(f64::from(r.i32_le()?) / 10_000.0),
                8 => {
                    let hi = i64::from(r.i32_le()?);
                    let lo = i64::from(r.u32_le()?);
                    ParamValue::Float(((hi << 32) | lo) as f64 / 10_000.0)
                }
                n => return Err(ProtocolError::malformed(format!("MONEYN length {n}"))),
            };
            (v, Some(ColType::Float))
        }
        // DATETIMN
        0x6F => {
            let _max = r.u8()?;
            let v = match r.u8()? {
                0 => ParamValue::Null,
                4 => {
                    let days = i64::from(r.u16_le()?);
                    let minutes = r.u16_le()?;
                    ParamValue::DateTime2(legacy_datetime(days, f64::from(minutes) * 60.0)?)
                }
                8 => {
                    let days = i64::from(r.i32_le()?);
                    let ticks = r.u32_le()?;
                    ParamValue::DateTime2(legacy_datetime(days, f64::from(ticks) / 300.0)?)
                }
                n => return Err(ProtocolError::malformed(format!("DATETIMN length {n}"))),
            };
            (v, Some(ColType::DateTime2))
        }
        // GUIDTYPE
        0x24 => {
            let _max = r.u8()?;
            let v = match r.u8()? {
                0 => ParamValue::Null,
                16 => {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(r.bytes(16)?);
                    b.swap(0, 3);
                    b.swap(1, 2);
                    b.swap(4, 5);
                    b.swap(6, 7);
                    ParamValue::Guid(Uuid::from_bytes(b))
                }
                n => return Err(ProtocolError::malformed(format!("GUID length {n}"))),
            };
            (v, Some(ColType::Guid))
        }
        // DECIMALN / NUMERICN
        0x6A | 0x6C => {
            let _max = r.u8()?;
            let _precision = r.u8()?;
            let scale = r.u8()?;
            let v = match r.u8()? {
                0 => ParamValue::Null,
                n => decimal(r.bytes(n as usize)?, scale)?,
            };
            (v, Some(ColType::Float))
        }
        // DATEN
        0x28 => {
            let v = match r.u8()? {
                0 => ParamValue::Null,
                3 => ParamValue::Date(date_from(r.bytes(3)?)?),
                n => return Err(ProtocolError::malformed(format!("DATEN length {n}"))),
            };
            (v, Some(ColType::Date))
        }
        // TIMEN
        0x29 => {
            let scale = r.u8()?;
            let v = match r.u8()? {
                0 => ParamValue::Null,
                n @ 3..=5 => ParamValue::Time(time_from(r.bytes(n as usize)?, scale)?),
                n => return Err(ProtocolError::malformed(format!("TIMEN length {n}"))),
            };
            (v, Some(ColType::Time))
        }
        // DATETIME2N
        0x2A => {
            let scale = r.u8()?;
            let v = match r.u8()? {
                0 => ParamValue::Null,
                n @ 6..=8 => {
                    let bytes = r.bytes(n as usize)?;
                    let (t, d) = bytes.split_at(n as usize - 3);
                    ParamValue::DateTime2(date_from(d)?.and_time(time_from(t, scale)?))
                }
                n => return Err(ProtocolError::malformed(format!("DATETIME2N length {n}"))),
            };
            (v, Some(ColType::DateTime2))
        }
        // DATETIMEOFFSETN
        0x2B => {
            let scale = r.u8()?;
            let v = match r.u8()? {
                0 => ParamValue::Null,
                n @ 8..=10 => {
                    let bytes = r.bytes(n as usize)?;
                    let (t, rest) = bytes.split_at(n as usize - 5);
                    let utc = date_from(&rest[..3])?.and_time(time_from(t, scale)?);
                    let minutes = i16::from_le_bytes([rest[3], rest[4]]);
                    let offset = FixedOffset::east_opt(i32::from(minutes) * 60)
                        .ok_or_else(|| ProtocolError::malformed("bad offset"))?;
                    ParamValue::DateTimeOffset(DateTime::from_naive_utc_and_offset(utc, offset))
                }
                n => {
                    return Err(ProtocolError::malformed(format!(
                        "DATETIMEOFFSETN length {n}"
                    )))
                }
            };
            (v, Some(ColType::DateTimeOffset))
        }
        // NVARCHAR, NCHAR, BIGVARCHAR, BIGCHAR
        0xE7 | 0xEF | 0xA7 | 0xAF => {
            let max = r.u16_le()?;
            r.skip(5)?; // collation
            let unicode = matches!(ty, 0xE7 | 0xEF);
            let bytes = if max == 0xFFFF {
                read_plp(r)?
            } else {
                match r.u16_le()? {
                    0xFFFF => None,
                    n => Some(r.bytes(n as usize)?.to_vec()),
                }
            };
            let col = if max == 0xFFFF {
                ColType::NVarCharMax
            } else {
                ColType::NVarChar
            };
            let v = match bytes {
                None => ParamValue::Null,
                Some(b) if unicode => ParamValue::Str(utf16_to_string(&b)),
                // Single-byte code pages: UTF-8 when valid, else Latin-1.
                Some(b) => ParamValue::Str(match String::from_utf8(b) {
                    Ok(s) => s,
                    Err(e) => e.into_bytes().iter().map(|b| char::from(*b)).collect(),
                }),
            };
            (v, Some(col))
        }
        // BIGVARBIN, BIGBINARY
        0xA5 | 0xAD => {
            let max = r.u16_le()?;
            let bytes = if max == 0xFFFF {
                read_plp(r)?
            } else {
                match r.u16_le()? {
                    0xFFFF => None,
                    n => Some(r.bytes(n as usize)?.to_vec()),
                }
            };
            let col = if max == 0xFFFF {
                ColType::VarBinaryMax
            } else {
                ColType::VarBinary
            };
            (bytes.map_or(ParamValue::Null, ParamValue::Bin), Some(col))
        }
        // XML (no schema)
        0xF1 => {
            if r.u8()? != 0 {
                return Err(ProtocolError::Unexpected(
                    "XML parameters with a schema".into(),
                ));
            }
            let v = read_plp(r)?.map_or(ParamValue::Null, |b| ParamValue::Str(utf16_to_string(&b)));
            (v, Some(ColType::NVarCharMax))
        }
        other => {
            return Err(ProtocolError::Unexpected(format!(
                "parameter type {other:#04x} is not supported"
            )))
        }
    };
    Ok(v)
}

/// Parses an `sp_executesql` parameter declaration such as
/// `@P1 int,@P2 nvarchar(4000) OUTPUT` into (lowercase name, declared type).
pub fn parse_declaration(decl: &str) -> Vec<(String, Option<ColType>)> {
    let mut items = Vec::new();
    let mut depth = 0i32;
    let mut current = String::new();
    for ch in decl.chars() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                items.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(ch);
    }
    items.push(current);
    items
        .into_iter()
        .filter_map(|item| {
            let item = item.trim();
            let (name, ty) = item.split_once(char::is_whitespace).unwrap_or((item, ""));
            let name = name.trim_start_matches('@').to_ascii_lowercase();
            if name.is_empty() {
                return None;
            }
            let ty = ty.trim();
            let ty = ty
                .strip_suffix("OUTPUT")
                .or_else(|| ty.strip_suffix("output"))
                .or_else(|| ty.strip_suffix("OUT"))
                .unwrap_or(ty);
            Some((name, ColType::from_decl(ty)))
        })
        .collect()
}

fn is_executesql(proc_ref: &ProcRef) -> bool {
    match proc_ref {
        ProcRef::Id(id) => *id == PROC_EXECUTESQL,
        ProcRef::Name(name) => {
            let lower = name.to_ascii_lowercase();
            let base = lower.rsplit('.').next().unwrap_or("");
            base.trim_matches(|c| c == '[' || c == ']') == "sp_executesql"
        }
    }
}

/// Interprets an RPC call as `sp_executesql`.
pub fn as_execute_sql(req: RpcRequest) -> Result<ExecuteSql, SqlError> {
    if !is_executesql(&req.proc_ref) {
        let name = match &req.proc_ref {
            ProcRef::Id(id) => format!("RPC procedure id {id}"),
            ProcRef::Name(n) => n.clone(),
        };
        return Err(SqlError::new(
            2812,
            format!(
                "Could not find stored procedure '{name}'. (tds-test-server only executes sp_executesql.)"
            ),
        ));
    }
    let mut params = req.params.into_iter();
    let stmt = match params.next() {
        Some(RpcParam {
            value: ParamValue::Str(s),
            ..
        }) => s,
        _ => {
            return Err(SqlError::new(
                214,
                "Procedure expects parameter '@statement' of type 'ntext/nchar/nvarchar'.",
            ))
        }
    };
    let mut rest: Vec<RpcParam> = params.collect();
    let mut declared: Vec<(String, Option<ColType>)> = Vec::new();
    if let Some(first) = rest.first() {
        let name = first.name.trim_start_matches('@').to_ascii_lowercase();
        let is_decl =
            name == "params" || (name.is_empty() && matches!(first.value, ParamValue::Str(_)));
        if is_decl {
            if let ParamValue::Str(d) = &first.value {
                declared = parse_declaration(d);
            }
            rest.remove(0);
        }
    }
    let bound = rest
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let name = if p.name.is_empty() {
                declared.get(i).map(|d| d.0.clone()).unwrap_or_default()
            } else {
                p.name.trim_start_matches('@').to_ascii_lowercase()
            };
            let ty = declared
                .iter()
                .find(|(n, _)| *n == name)
                .and_then(|(_, t)| *t)
                .or(p.wire_type);
            BoundParam {
                name,
                value: p.value.to_sqlite(),
                ty,
            }
        })
        .collect();
    Ok(ExecuteSql {
        stmt,
        params: bound,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::string_to_utf16;

    /// Encodes an `sp_executesql` RPC payload (with ALL_HEADERS) the way
    /// tiberius does, with pre-encoded parameter type+value bytes.
    pub(crate) fn build_rpc(stmt: &str, decl: &str, values: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&22u32.to_le_bytes());
        p.extend_from_slice(&18u32.to_le_bytes());
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&[0u8; 8]);
        p.extend_from_slice(&1u32.to_le_bytes());
        p.extend_from_slice(&0xFFFFu16.to_le_bytes());
        p.extend_from_slice(&PROC_EXECUTESQL.to_le_bytes());
        p.extend_from_slice(&0u16.to_le_bytes());
        let mut named = vec![("stmt", nvarchar(stmt)), ("params", nvarchar(decl))];
        named.extend(values.iter().cloned());
        for (name, value) in named {
            let n = string_to_utf16(name);
            p.push((n.len() / 2) as u8);
            p.extend_from_slice(&n);
            p.push(0);
            p.extend_from_slice(&value);
        }
        p
    }

    pub(crate) fn nvarchar(s: &str) -> Vec<u8> {
        let bytes = string_to_utf16(s);
        let mut v = vec![0xE7];
        v.extend_from_slice(&8000u16.to_le_bytes());
        v.extend_from_slice(&[0u8; 5]);
        v.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        v.extend_from_slice(&bytes);
        v
    }

    #[test]
    fn decodes_tiberius_style_execute_sql() {
        let guid = Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").unwrap();
        let mut g = vec![0x24, 16, 16];
        let mut b = *guid.as_bytes();
        b.swap(0, 3);
        b.swap(1, 2);
        b.swap(4, 5);
        b.swap(6, 7);
        g.extend_from_slice(&b);
        let mut long = vec![0xE7, 0xFF, 0xFF, 0, 0, 0, 0, 0];
        long.extend_from_slice(&0xFFFF_FFFF_FFFF_FFFEu64.to_le_bytes());
        let text = string_to_utf16(&"x".repeat(5000));
        long.extend_from_slice(&(text.len() as u32).to_le_bytes());
        long.extend_from_slice(&text);
        long.extend_from_slice(&0u32.to_le_bytes());
        let payload = build_rpc(
            "SELECT @P1, @P2, @P3, @P4, @P5",
            "@P1 int,@P2 uniqueidentifier,@P3 bit,@P4 nvarchar(max),@P5 datetime2",
            &[
                ("@P1", vec![0x26, 4, 4, 0xFE, 0xFF, 0xFF, 0xFF]),
                ("@P2", g),
                ("@P3", vec![0x1F]),
                ("@P4", long),
                ("@P5", vec![0x2A, 7, 8, 0x80, 0x96, 0x98, 0, 0, 1, 0, 0]),
            ],
        );
        let body = strip_all_headers(&payload).unwrap();
        let calls = parse_rpc(body).unwrap();
        assert_eq!(calls.len(), 1);
        let exec = as_execute_sql(calls.into_iter().next().unwrap()).unwrap();
        assert_eq!(exec.stmt, "SELECT @P1, @P2, @P3, @P4, @P5");
        assert_eq!(exec.params.len(), 5);
        assert_eq!(exec.params[0].value, Value::Integer(-2));
        assert_eq!(exec.params[0].ty, Some(ColType::Int));
        assert_eq!(
            exec.params[1].value,
            Value::Text("00112233-4455-6677-8899-aabbccddeeff".into())
        );
        assert_eq!(exec.params[2].value, Value::Null);
        assert_eq!(exec.params[2].ty, Some(ColType::Bit));
        assert_eq!(exec.params[3].value, Value::Text("x".repeat(5000)));
        assert_eq!(
            exec.params[4].value,
            Value::Text("0001-01-02 00:00:01.0000000".into())
        );
    }

    #[test]
    fn truncated_rpc_is_error_8009() {
        let payload = build_rpc("SELECT 1", "", &[]);
        let body = strip_all_headers(&payload).unwrap();
        let err = parse_rpc(&body[..body.len() - 3]).unwrap_err();
        assert_eq!(err.number, 8009);
        assert!(strip_all_headers(&[0xFF, 0, 0, 0]).is_err());
    }

    #[test]
    fn mutated_and_truncated_payloads_never_panic() {
        let mut long = vec![0xE7, 0xFF, 0xFF, 0, 0, 0, 0, 0];
        long.extend_from_slice(&0xFFFF_FFFF_FFFF_FFFEu64.to_le_bytes());
        long.extend_from_slice(&4u32.to_le_bytes());
        long.extend_from_slice(&[b'a', 0, b'b', 0]);
        long.extend_from_slice(&0u32.to_le_bytes());
        let payload = build_rpc(
            "SELECT @P1, @P2, @P3",
            "@P1 int,@P2 nvarchar(max),@P3 datetimeoffset",
            &[
                ("@P1", vec![0x26, 8, 8, 1, 2, 3, 4, 5, 6, 7, 8]),
                ("@P2", long),
                ("@P3", vec![0x2B, 7, 10, 1, 2, 3, 4, 5, 6, 7, 8, 0x78, 0]),
            ],
        );
        let body = strip_all_headers(&payload).unwrap();
        assert!(parse_rpc(body).is_ok());
        for len in 0..body.len() {
            let _ =
                parse_rpc(&body[..len]).map(|calls| calls.into_iter().map(as_execute_sql).count());
        }
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..3000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut mutated = body.to_vec();
            let pos = (seed % mutated.len() as u64) as usize;
            mutated[pos] = (seed >> 32) as u8;
            let _ = parse_rpc(&mutated).map(|calls| calls.into_iter().map(as_execute_sql).count());
        }
    }

    #[test]
    fn declaration_parsing() {
        let d = parse_declaration("@P1 int,@Name nvarchar(10) OUTPUT, @d decimal(10,2)");
        assert_eq!(d[0], ("p1".into(), Some(ColType::Int)));
        assert_eq!(d[1], ("name".into(), Some(ColType::NVarChar)));
        assert_eq!(d[2], ("d".into(), Some(ColType::Float)));
        assert!(parse_declaration("").is_empty());
    }

    #[test]
    fn other_procedures_are_rejected() {
        let req = RpcRequest {
            proc_ref: ProcRef::Id(13),
            params: vec![],
        };
        assert_eq!(as_execute_sql(req).unwrap_err().number, 2812);
    }
}
