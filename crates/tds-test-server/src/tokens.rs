//! Encoding of server-to-client TDS tokens (the payload of a TABULAR_RESULT
//! message): LOGINACK, FEATUREEXTACK, ENVCHANGE, INFO, ERROR, COLMETADATA,
//! ROW, RETURNSTATUS and the DONE family.
//!
//! Column values use the nullable TDS types tiberius decodes: INTN, BITN,
//! FLTN, GUIDTYPE, DATETIME2N, DATETIMEOFFSETN, DATEN, TIMEN (scale 7),
//! NVARCHAR (4000, or MAX as PLP chunks) and BIGVARBIN (8000, or MAX as PLP).

use crate::error::SqlError;
use crate::types::{Cell, ColType};
use crate::wire::string_to_utf16;
use chrono::{Datelike, NaiveDate, NaiveTime, Timelike};

/// Token type bytes.
pub mod token {
    /// RETURNSTATUS.
    pub const RETURN_STATUS: u8 = 0x79;
    /// COLMETADATA.
    pub const COL_METADATA: u8 = 0x81;
    /// ERROR.
    pub const ERROR: u8 = 0xAA;
    /// INFO.
    pub const INFO: u8 = 0xAB;
    /// LOGINACK.
    pub const LOGIN_ACK: u8 = 0xAD;
    /// FEATUREEXTACK.
    pub const FEATURE_EXT_ACK: u8 = 0xAE;
    /// ROW.
    pub const ROW: u8 = 0xD1;
    /// ENVCHANGE.
    pub const ENV_CHANGE: u8 = 0xE3;
    /// DONE.
    pub const DONE: u8 = 0xFD;
    /// DONEPROC.
    pub const DONE_PROC: u8 = 0xFE;
    /// DONEINPROC.
    pub const DONE_IN_PROC: u8 = 0xFF;
}

/// DONE status bits.
pub mod done_status {
    /// More results follow.
    pub const MORE: u16 = 0x0001;
    /// The statement failed.
    pub const ERROR: u16 = 0x0002;
    /// The row count is valid.
    pub const COUNT: u16 = 0x0010;
    /// Acknowledges an ATTENTION.
    pub const ATTN: u16 = 0x0020;
}

/// DONE `CurCmd` values (informational only).
pub mod cur_cmd {
    /// SELECT.
    pub const SELECT: u16 = 0xC1;
    /// INSERT.
    pub const INSERT: u16 = 0xC3;
    /// DELETE.
    pub const DELETE: u16 = 0xC4;
    /// UPDATE.
    pub const UPDATE: u16 = 0xC5;
    /// Anything else.
    pub const OTHER: u16 = 0x00;
}

/// ENVCHANGE types.
mod env {
    pub const DATABASE: u8 = 1;
    pub const PACKET_SIZE: u8 = 4;
    pub const SQL_COLLATION: u8 = 7;
    pub const BEGIN_TRAN: u8 = 8;
    pub const COMMIT_TRAN: u8 = 9;
    pub const ROLLBACK_TRAN: u8 = 10;
    pub const RESET_CONNECTION: u8 = 18;
}

/// SQL_Latin1_General_CP1_CI_AS: LCID 0x0409, CI/AI flags, sort id 52.
pub const COLLATION: [u8; 5] = [0x09, 0x04, 0xD0, 0x00, 0x34];

/// Which DONE-family token closes a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoneKind {
    /// DONE (SQL batch).
    Done,
    /// DONEINPROC (statement inside an RPC).
    DoneInProc,
    /// DONEPROC (end of an RPC).
    DoneProc,
}

/// A result-set column: name and TDS type.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Column name (may be empty).
    pub name: String,
    /// TDS type.
    pub ty: ColType,
}

/// Appends tokens to a response buffer.
#[derive(Debug, Default)]
pub struct TokenWriter {
    buf: Vec<u8>,
    /// Offset of the status field of the last DONE written, if nothing was
    /// written after it.
    last_done_status: Option<usize>,
}

impl TokenWriter {
    /// An empty response.
    pub fn new() -> Self {
        Self::default()
    }

    /// The encoded tokens.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// True when no token was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn put(&mut self, bytes: &[u8]) {
        self.last_done_status = None;
        self.buf.extend_from_slice(bytes);
    }

    /// ERROR token.
    pub fn error(&mut self, err: &SqlError, server: &str, line: u32) {
        self.message(
            token::ERROR,
            err.number,
            err.state,
            err.class,
            &err.message,
            server,
            line,
        );
    }

    /// INFO token (class 0 messages, PRINT, "Changed database context").
    pub fn info(&mut self, number: u32, message: &str, server: &str) {
        self.message(token::INFO, number, 1, 0, message, server, 1);
    }

    #[allow(clippy::too_many_arguments)]
    fn message(
        &mut self,
        ty: u8,
        number: u32,
        state: u8,
        class: u8,
        message: &str,
        server: &str,
        line: u32,
    ) {
        let mut body = Vec::new();
        body.extend_from_slice(&number.to_le_bytes());
        body.push(state);
        body.push(class);
        us_varchar(&mut body, truncate_utf16(message, 4000));
        b_varchar(&mut body, server);
        b_varchar(&mut body, "");
        body.extend_from_slice(&line.to_le_bytes());
        let mut tok = vec![ty];
        tok.extend_from_slice(&(body.len() as u16).to_le_bytes());
        tok.extend_from_slice(&body);
        self.put(&tok);
    }

    fn env_change(&mut self, ty: u8, new: &[u8], old: &[u8]) {
        let mut body = vec![ty];
        body.extend_from_slice(new);
        body.extend_from_slice(old);
        let mut tok = vec![token::ENV_CHANGE];
        tok.extend_from_slice(&(body.len() as u16).to_le_bytes());
        tok.extend_from_slice(&body);
        self.put(&tok);
    }

    /// ENVCHANGE database.
    pub fn env_database(&mut self, new: &str, old: &str) {
        let (mut n, mut o) = (Vec::new(), Vec::new());
        b_varchar(&mut n, new);
        b_varchar(&mut o, old);
        self.env_change(env::DATABASE, &n, &o);
    }

    /// ENVCHANGE packet size.
    pub fn env_packet_size(&mut self, new: u32, old: u32) {
        let (mut n, mut o) = (Vec::new(), Vec::new());
        b_varchar(&mut n, &new.to_string());
        b_varchar(&mut o, &old.to_string());
        self.env_change(env::PACKET_SIZE, &n, &o);
    }

    /// ENVCHANGE SQL collation.
    pub fn env_collation(&mut self) {
        let mut n = vec![COLLATION.len() as u8];
        n.extend_from_slice(&COLLATION);
        self.env_change(env::SQL_COLLATION, &n, &[0]);
    }

    /// ENVCHANGE begin transaction with its 8-byte descriptor.
    pub fn env_begin_tran(&mut self, descriptor: [u8; 8]) {
        let mut n = vec![8];
        n.extend_from_slice(&descriptor);
        self.env_change(env::BEGIN_TRAN, &n, &[0]);
    }

    /// ENVCHANGE commit transaction.
    pub fn env_commit_tran(&mut self, descriptor: [u8; 8]) {
        let mut o = vec![8];
        o.extend_from_slice(&descriptor);
        self.env_change(env::COMMIT_TRAN, &[0], &o);
    }

    /// ENVCHANGE rollback transaction.
    pub fn env_rollback_tran(&mut self, descriptor: [u8; 8]) {
        let mut o = vec![8];
        o.extend_from_slice(&descriptor);
        self.env_change(env::ROLLBACK_TRAN, &[0], &o);
    }

    /// ENVCHANGE reset connection acknowledgement.
    pub fn env_reset_connection(&mut self) {
        self.env_change(env::RESET_CONNECTION, &[0], &[0]);
    }

    /// LOGINACK with the negotiated TDS version (big-endian on the wire).
    pub fn login_ack(&mut self, tds_version: u32, prog_name: &str) {
        let mut body = vec![1u8]; // interface: SQL_TSQL
        body.extend_from_slice(&tds_version.to_be_bytes());
        b_varchar(&mut body, prog_name);
        body.extend_from_slice(&[16, 0, 0x0F, 0xA0]); // 16.0.4000
        let mut tok = vec![token::LOGIN_ACK];
        tok.extend_from_slice(&(body.len() as u16).to_le_bytes());
        tok.extend_from_slice(&body);
        self.put(&tok);
    }

    /// FEATUREEXTACK acknowledging FEDAUTH (no nonce).
    pub fn feature_ext_ack_fedauth(&mut self) {
        let mut tok = vec![token::FEATURE_EXT_ACK, 0x02];
        tok.extend_from_slice(&0u32.to_le_bytes());
        tok.push(0xFF);
        self.put(&tok);
    }

    /// RETURNSTATUS.
    pub fn return_status(&mut self, status: i32) {
        let mut tok = vec![token::RETURN_STATUS];
        tok.extend_from_slice(&status.to_le_bytes());
        self.put(&tok);
    }

    /// A DONE, DONEINPROC or DONEPROC token.
    pub fn done(&mut self, kind: DoneKind, status: u16, cmd: u16, rows: u64) {
        let ty = match kind {
            DoneKind::Done => token::DONE,
            DoneKind::DoneInProc => token::DONE_IN_PROC,
            DoneKind::DoneProc => token::DONE_PROC,
        };
        let mut tok = vec![ty];
        tok.extend_from_slice(&status.to_le_bytes());
        tok.extend_from_slice(&cmd.to_le_bytes());
        tok.extend_from_slice(&rows.to_le_bytes());
        self.put(&tok);
        self.last_done_status = Some(self.buf.len() - 12);
    }

    /// Ends a SQL batch response: the last token must be a DONE without the
    /// MORE bit. Clears MORE on a trailing DONE or appends a final DONE.
    pub fn finish_batch(&mut self, error: bool) {
        match self.last_done_status {
            Some(pos) if self.buf.get(pos - 1) == Some(&token::DONE) => {
                let status = u16::from_le_bytes([self.buf[pos], self.buf[pos + 1]]);
                let status =
                    (status & !done_status::MORE) | if error { done_status::ERROR } else { 0 };
                self.buf[pos..pos + 2].copy_from_slice(&status.to_le_bytes());
            }
            _ => {
                let status = if error { done_status::ERROR } else { 0 };
                self.done(DoneKind::Done, status, cur_cmd::OTHER, 0);
            }
        }
    }

    /// COLMETADATA.
    pub fn col_metadata(&mut self, columns: &[Column]) {
        let mut tok = vec![token::COL_METADATA];
        tok.extend_from_slice(&(columns.len() as u16).to_le_bytes());
        for col in columns {
            tok.extend_from_slice(&0u32.to_le_bytes()); // user type
            tok.extend_from_slice(&0x0009u16.to_le_bytes()); // nullable | updateable
            type_info(&mut tok, col.ty);
            b_varchar(&mut tok, &col.name);
        }
        self.put(&tok);
    }

    /// ROW. `cells` must be converted for `columns` (a mismatching cell is
    /// sent as NULL).
    pub fn row(&mut self, columns: &[Column], cells: &[Cell]) {
        let mut tok = vec![token::ROW];
        for (i, col) in columns.iter().enumerate() {
            let cell = cells.get(i).unwrap_or(&Cell::Null);
            value(&mut tok, col.ty, cell);
        }
        self.put(&tok);
    }
}

/// `B_VARCHAR`: length in UTF-16 units (max 255) then UTF-16LE.
fn b_varchar(out: &mut Vec<u8>, s: &str) {
    let s = truncate_utf16(s, 255);
    let bytes = string_to_utf16(s);
    out.push((bytes.len() / 2) as u8);
    out.extend_from_slice(&bytes);
}

/// `US_VARCHAR`: u16 length in UTF-16 units then UTF-16LE.
fn us_varchar(out: &mut Vec<u8>, s: &str) {
    let bytes = string_to_utf16(s);
    out.extend_from_slice(&((bytes.len() / 2) as u16).to_le_bytes());
    out.extend_from_slice(&bytes);
}

/// Longest prefix of `s` with at most `max` UTF-16 units.
fn truncate_utf16(s: &str, max: usize) -> &str {
    let mut units = 0;
    for (idx, ch) in s.char_indices() {
        units += ch.len_utf16();
        if units > max {
            return &s[..idx];
        }
    }
    s
}

fn type_info(out: &mut Vec<u8>, ty: ColType) {
    match ty {
        ColType::TinyInt => out.extend_from_slice(&[0x26, 1]),
        ColType::SmallInt => out.extend_from_slice(&[0x26, 2]),
        ColType::Int => out.extend_from_slice(&[0x26, 4]),
        ColType::BigInt => out.extend_from_slice(&[0x26, 8]),
        ColType::Bit => out.extend_from_slice(&[0x68, 1]),
        ColType::Float => out.extend_from_slice(&[0x6D, 8]),
        ColType::Guid => out.extend_from_slice(&[0x24, 16]),
        ColType::DateTime2 => out.extend_from_slice(&[0x2A, 7]),
        ColType::DateTimeOffset => out.extend_from_slice(&[0x2B, 7]),
        ColType::Date => out.push(0x28),
        ColType::Time => out.extend_from_slice(&[0x29, 7]),
        ColType::NVarChar | ColType::NVarCharMax => {
            out.push(0xE7);
            let max: u16 = if ty == ColType::NVarChar {
                8000
            } else {
                0xFFFF
            };
            out.extend_from_slice(&max.to_le_bytes());
            out.extend_from_slice(&COLLATION);
        }
        ColType::VarBinary | ColType::VarBinaryMax => {
            out.push(0xA5);
            let max: u16 = if ty == ColType::VarBinary {
                8000
            } else {
                0xFFFF
            };
            out.extend_from_slice(&max.to_le_bytes());
        }
    }
}

fn time_bytes(t: &NaiveTime) -> [u8; 5] {
    let nanos = u64::from(t.num_seconds_from_midnight()) * 1_000_000_000
        + u64::from(t.nanosecond() % 1_000_000_000);
    let incr = (nanos / 100).to_le_bytes();
    [incr[0], incr[1], incr[2], incr[3], incr[4]]
}

fn date_bytes(d: &NaiveDate) -> [u8; 3] {
    let days = u32::try_from(d.num_days_from_ce() - 1)
        .unwrap_or(0)
        .to_le_bytes();
    [days[0], days[1], days[2]]
}

fn plp(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    for chunk in data.chunks(8000) {
        out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&0u32.to_le_bytes());
}

fn value(out: &mut Vec<u8>, ty: ColType, cell: &Cell) {
    match (ty, cell) {
        (ColType::TinyInt, Cell::Int(i)) => {
            out.push(1);
            out.push(*i as u8);
        }
        (ColType::SmallInt, Cell::Int(i)) => {
            out.push(2);
            out.extend_from_slice(&(*i as i16).to_le_bytes());
        }
        (ColType::Int, Cell::Int(i)) => {
            out.push(4);
            out.extend_from_slice(&(*i as i32).to_le_bytes());
        }
        (ColType::BigInt, Cell::Int(i)) => {
            out.push(8);
            out.extend_from_slice(&i.to_le_bytes());
        }
        (ColType::Bit, Cell::Bit(b)) => out.extend_from_slice(&[1, u8::from(*b)]),
        (ColType::Float, Cell::Float(f)) => {
            out.push(8);
            out.extend_from_slice(&f.to_le_bytes());
        }
        (ColType::Guid, Cell::Guid(u)) => {
            let mut b = *u.as_bytes();
            b.swap(0, 3);
            b.swap(1, 2);
            b.swap(4, 5);
            b.swap(6, 7);
            out.push(16);
            out.extend_from_slice(&b);
        }
        (ColType::DateTime2, Cell::DateTime2(dt)) => {
            out.push(8);
            out.extend_from_slice(&time_bytes(&dt.time()));
            out.extend_from_slice(&date_bytes(&dt.date()));
        }
        (ColType::DateTimeOffset, Cell::DateTimeOffset(dto)) => {
            let utc = dto.naive_utc();
            out.push(10);
            out.extend_from_slice(&time_bytes(&utc.time()));
            out.extend_from_slice(&date_bytes(&utc.date()));
            let minutes = (dto.offset().local_minus_utc() / 60) as i16;
            out.extend_from_slice(&minutes.to_le_bytes());
        }
        (ColType::Date, Cell::Date(d)) => {
            out.push(3);
            out.extend_from_slice(&date_bytes(d));
        }
        (ColType::Time, Cell::Time(t)) => {
            out.push(5);
            out.extend_from_slice(&time_bytes(t));
        }
        (ColType::NVarChar, Cell::Str(s)) => {
            let bytes = string_to_utf16(s);
            out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
            out.extend_from_slice(&bytes);
        }
        (ColType::NVarCharMax, Cell::Str(s)) => plp(out, &string_to_utf16(s)),
        (ColType::VarBinary, Cell::Bin(b)) => {
            out.extend_from_slice(&(b.len() as u16).to_le_bytes());
            out.extend_from_slice(b);
        }
        (ColType::VarBinaryMax, Cell::Bin(b)) => plp(out, b),
        (ColType::NVarChar | ColType::VarBinary, _) => out.extend_from_slice(&[0xFF, 0xFF]),
        (ColType::NVarCharMax | ColType::VarBinaryMax, _) => {
            out.extend_from_slice(&u64::MAX.to_le_bytes());
        }
        // Every other nullable type: zero length means NULL.
        _ => out.push(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDateTime;

    #[test]
    fn done_token_layout_and_finish() {
        let mut w = TokenWriter::new();
        w.done(
            DoneKind::Done,
            done_status::MORE | done_status::COUNT,
            cur_cmd::INSERT,
            3,
        );
        w.finish_batch(false);
        let b = w.into_bytes();
        assert_eq!(b.len(), 13);
        assert_eq!(b[0], token::DONE);
        assert_eq!(u16::from_le_bytes([b[1], b[2]]), done_status::COUNT);
        assert_eq!(u64::from_le_bytes(b[5..13].try_into().unwrap()), 3);
    }

    #[test]
    fn finish_appends_done_after_other_tokens() {
        let mut w = TokenWriter::new();
        w.info(0, "hello", "srv");
        w.finish_batch(true);
        let b = w.into_bytes();
        assert_eq!(b[b.len() - 13], token::DONE);
        assert_eq!(
            u16::from_le_bytes([b[b.len() - 12], b[b.len() - 11]]),
            done_status::ERROR
        );
    }

    #[test]
    fn error_token_layout() {
        let mut w = TokenWriter::new();
        w.error(&SqlError::new(2627, "dup"), "srv", 1);
        let b = w.into_bytes();
        assert_eq!(b[0], token::ERROR);
        let len = u16::from_le_bytes([b[1], b[2]]) as usize;
        assert_eq!(len, b.len() - 3);
        assert_eq!(u32::from_le_bytes(b[3..7].try_into().unwrap()), 2627);
        assert_eq!(b[8], 16); // class
        assert_eq!(u16::from_le_bytes([b[9], b[10]]), 3); // "dup"
    }

    #[test]
    fn row_values_encode_like_sql_server() {
        let cols = vec![
            Column {
                name: "i".into(),
                ty: ColType::Int,
            },
            Column {
                name: "s".into(),
                ty: ColType::NVarChar,
            },
            Column {
                name: "g".into(),
                ty: ColType::Guid,
            },
            Column {
                name: "d".into(),
                ty: ColType::DateTime2,
            },
            Column {
                name: "m".into(),
                ty: ColType::NVarCharMax,
            },
            Column {
                name: "n".into(),
                ty: ColType::BigInt,
            },
        ];
        let dt = NaiveDateTime::parse_from_str("0001-01-02 00:00:01", "%Y-%m-%d %H:%M:%S").unwrap();
        let guid = uuid::Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").unwrap();
        let cells = vec![
            Cell::Int(-2),
            Cell::Str("ab".into()),
            Cell::Guid(guid),
            Cell::DateTime2(dt),
            Cell::Str(String::new()),
            Cell::Null,
        ];
        let mut w = TokenWriter::new();
        w.row(&cols, &cells);
        let b = w.into_bytes();
        let mut expected = vec![token::ROW, 4];
        expected.extend_from_slice(&(-2i32).to_le_bytes());
        expected.extend_from_slice(&[4, 0, b'a', 0, b'b', 0]);
        expected.push(16);
        expected.extend_from_slice(&[
            0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ]);
        expected.push(8);
        expected.extend_from_slice(&[0x80, 0x96, 0x98, 0x00, 0x00]); // 10^7 increments
        expected.extend_from_slice(&[1, 0, 0]); // day 1
        expected.extend_from_slice(&0u64.to_le_bytes()); // PLP total length 0
        expected.extend_from_slice(&0u32.to_le_bytes()); // terminator
        expected.push(0); // NULL bigint
        assert_eq!(b, expected);
    }

    #[test]
    fn long_names_are_truncated_not_corrupted() {
        assert_eq!(truncate_utf16("abc", 2), "ab");
        assert_eq!(truncate_utf16("a✓b", 2), "a✓");
        assert_eq!(truncate_utf16("a😀", 2), "a");
    }
}
