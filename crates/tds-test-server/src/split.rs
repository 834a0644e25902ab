//! Splitting a batch into statements.
//!
//! Statements end at a `;` outside parentheses, literals, identifiers and
//! comments. Like SQL Server, a semicolon is optional: a new statement also
//! starts at the beginning of a line whose first word is a statement keyword
//! (`INSERT`, `UPDATE`, `DELETE`, `SELECT`, `WITH`, `BEGIN TRAN`, `COMMIT`,
//! `ROLLBACK`, `SET NOCOUNT`, `THROW`, `CREATE`, …) — unless the statement
//! so far still needs it (`INSERT INTO t (a)` + newline + `SELECT …`, a CTE
//! before its main query, `… UNION` + newline + `SELECT`, `UPDATE t` +
//! newline + `SET a = 1`). A line holding only `GO` is rejected: `GO` is a
//! client-side separator that SQL Server itself never receives.

use crate::error::SqlError;
use crate::lexer::{lex, Kind, Token};

const STARTERS: &[&str] = &[
    "INSERT",
    "UPDATE",
    "DELETE",
    "MERGE",
    "CREATE",
    "DROP",
    "ALTER",
    "TRUNCATE",
    "THROW",
    "RAISERROR",
    "PRINT",
    "DECLARE",
    "EXEC",
    "EXECUTE",
    "USE",
    "COMMIT",
    "ROLLBACK",
    "SAVE",
    "IF",
    "WHILE",
    "RETURN",
    "BEGIN",
    "SELECT",
    "WITH",
    "SET",
];

/// Words after which a following keyword continues the same statement.
const CONTINUERS: &[&str] = &[
    "THEN",
    "ELSE",
    "AS",
    "UNION",
    "ALL",
    "EXCEPT",
    "INTERSECT",
    "FOR",
    "AND",
    "OR",
    "NOT",
    "IN",
    "EXISTS",
    "INTO",
    "FROM",
    "WHERE",
    "BY",
];

/// SET options that make `SET` start a new statement.
const SET_OPTIONS: &[&str] = &[
    "NOCOUNT",
    "XACT_ABORT",
    "TRANSACTION",
    "ANSI_NULLS",
    "ANSI_PADDING",
    "ANSI_WARNINGS",
    "ANSI_NULL_DFLT_ON",
    "ARITHABORT",
    "CONCAT_NULL_YIELDS_NULL",
    "QUOTED_IDENTIFIER",
    "NUMERIC_ROUNDABORT",
    "DATEFORMAT",
    "DATEFIRST",
    "LOCK_TIMEOUT",
    "DEADLOCK_PRIORITY",
    "LANGUAGE",
    "TEXTSIZE",
    "IMPLICIT_TRANSACTIONS",
    "ROWCOUNT",
    "STATISTICS",
    "IDENTITY_INSERT",
    "CONTEXT_INFO",
];

fn next_significant(tokens: &[Token], from: usize) -> Option<&Token> {
    tokens[from..].iter().find(|t| !t.is_trivia())
}

/// Does `kw` at the start of a line begin a new statement, given the
/// significant tokens of the statement collected so far?
fn starts_new_statement(current: &[&Token], tokens: &[Token], idx: usize) -> bool {
    let tok = &tokens[idx];
    let kw = tok.upper();
    if !STARTERS.contains(&kw.as_str()) {
        return false;
    }
    let Some(first) = current.first() else {
        return false;
    };
    let Some(prev) = current.last() else {
        return false;
    };
    if prev.kind == Kind::Op && !prev.is_op(")") {
        return false;
    }
    if CONTINUERS.contains(&prev.upper().as_str()) {
        return false;
    }
    let first_kw = first.upper();
    let seen_at_depth0 = |words: &[&str]| {
        let mut depth = 0i32;
        current.iter().skip(1).any(|t| {
            if t.is_op("(") {
                depth += 1;
            } else if t.is_op(")") {
                depth -= 1;
            }
            depth == 0 && words.contains(&t.upper().as_str())
        })
    };
    match kw.as_str() {
        "SET" => next_significant(tokens, idx + 1)
            .is_some_and(|t| t.kind == Kind::Var || SET_OPTIONS.contains(&t.upper().as_str())),
        "SELECT" | "WITH" => {
            if first_kw == "INSERT" && !seen_at_depth0(&["VALUES", "SELECT", "DEFAULT", "EXEC"]) {
                return false;
            }
            if first_kw == "WITH"
                && !seen_at_depth0(&["SELECT", "INSERT", "UPDATE", "DELETE", "MERGE"])
            {
                return false;
            }
            if first_kw == "CREATE" || first_kw == "ALTER" {
                return false;
            }
            true
        }
        "INSERT" | "UPDATE" | "DELETE" => {
            // `ON DELETE CASCADE`, `ON UPDATE ...` in DDL.
            if first_kw == "MERGE" || first_kw == "ALTER" {
                return false;
            }
            if first_kw == "WITH"
                && !seen_at_depth0(&["SELECT", "INSERT", "UPDATE", "DELETE", "MERGE"])
            {
                return false;
            }
            if first_kw == "CREATE" && kw != "INSERT" {
                // CREATE TRIGGER ... FOR UPDATE, FOREIGN KEY ... ON DELETE
                return false;
            }
            true
        }
        _ => true,
    }
}

fn is_go_line(tokens: &[Token], idx: usize) -> bool {
    if !tokens[idx].is_kw("GO") {
        return false;
    }
    let line_start =
        idx == 0 || (tokens[idx - 1].kind == Kind::Ws && tokens[idx - 1].text.contains('\n'));
    let mut j = idx + 1;
    if tokens
        .get(j)
        .is_some_and(|t| t.kind == Kind::Ws && !t.text.contains('\n'))
    {
        j += 1;
    }
    if tokens.get(j).is_some_and(|t| t.kind == Kind::Num) {
        j += 1;
    }
    let line_end = match tokens.get(j) {
        None => true,
        Some(t) => (t.kind == Kind::Ws && t.text.contains('\n')) || t.kind == Kind::Comment,
    };
    line_start && line_end
}

/// Splits a batch into statement texts (trimmed, without the `;`, empty
/// statements dropped).
pub fn split_batch(src: &str) -> Result<Vec<String>, SqlError> {
    let tokens = lex(src)?;
    let mut out = Vec::new();
    let mut stmt_start = 0usize; // byte offset
    let mut current: Vec<&Token> = Vec::new();
    let mut depth = 0i32;
    let push = |out: &mut Vec<String>, from: usize, to: usize| {
        let text = src[from..to].trim();
        if !text.is_empty()
            && !lex(text)
                .map(|t| t.iter().all(Token::is_trivia))
                .unwrap_or(false)
        {
            out.push(text.to_string());
        }
    };
    for (idx, tok) in tokens.iter().enumerate() {
        if tok.is_trivia() {
            continue;
        }
        if is_go_line(&tokens, idx) {
            return Err(SqlError::new(
                102,
                "Incorrect syntax near 'GO'. GO is a client-side batch separator; send each batch separately.",
            ));
        }
        if tok.is_op(";") && depth <= 0 {
            push(&mut out, stmt_start, tok.start);
            stmt_start = tok.start + 1;
            current.clear();
            depth = 0;
            continue;
        }
        let at_line_start =
            idx > 0 && tokens[idx - 1].kind == Kind::Ws && tokens[idx - 1].text.contains('\n');
        if depth == 0 && at_line_start && starts_new_statement(&current, &tokens, idx) {
            push(&mut out, stmt_start, tok.start);
            stmt_start = tok.start;
            current.clear();
        }
        if tok.is_op("(") {
            depth += 1;
        } else if tok.is_op(")") {
            depth -= 1;
        }
        current.push(tok);
    }
    push(&mut out, stmt_start, src.len());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_semicolons_outside_literals() {
        let s = split_batch("SELECT ';' AS [a;b]; /* ; */ INSERT INTO t VALUES (1);;  -- x;\n")
            .unwrap();
        assert_eq!(
            s,
            vec!["SELECT ';' AS [a;b]", "/* ; */ INSERT INTO t VALUES (1)"]
        );
    }

    #[test]
    fn splits_on_newlines_before_statement_keywords() {
        let s = split_batch(
            "SET NOCOUNT ON\nUPDATE t\nSET a = 1\nWHERE b = 2\nSELECT @@ROWCOUNT\nBEGIN TRAN\nCOMMIT",
        )
        .unwrap();
        assert_eq!(
            s,
            vec![
                "SET NOCOUNT ON",
                "UPDATE t\nSET a = 1\nWHERE b = 2",
                "SELECT @@ROWCOUNT",
                "BEGIN TRAN",
                "COMMIT"
            ]
        );
    }

    #[test]
    fn keeps_multi_line_statements_together() {
        let s = split_batch(
            "INSERT INTO t (a)\nSELECT a FROM s\nUNION ALL\nSELECT b FROM u\nWITH c AS (SELECT 1 AS x)\nSELECT x FROM c",
        )
        .unwrap();
        assert_eq!(
            s,
            vec![
                "INSERT INTO t (a)\nSELECT a FROM s\nUNION ALL\nSELECT b FROM u",
                "WITH c AS (SELECT 1 AS x)\nSELECT x FROM c"
            ]
        );
        let s = split_batch("SELECT a\nFROM t\nWHERE x IN (\nSELECT y FROM u)").unwrap();
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn rejects_go() {
        assert!(split_batch("SELECT 1\nGO\nSELECT 2").is_err());
        assert_eq!(split_batch("SELECT go FROM t").unwrap().len(), 1);
    }
}
