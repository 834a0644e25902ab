//! A small T-SQL lexer shared by the statement splitter and the translator.
//!
//! It understands exactly what is needed to never mis-split or mis-translate
//! text inside literals: `'...'` strings (with `''` escapes) and `N'...'`,
//! `[bracketed]` and `"quoted"` identifiers, `--` line comments, nested
//! `/* */` block comments, `@variables`, `@@system_variables`, numbers,
//! `0x` binary literals and operators. Every token keeps its source span so
//! the splitter can hand back the original text.

use crate::error::SqlError;

/// Token kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Spaces, tabs, newlines.
    Ws,
    /// `-- ...` or `/* ... */`.
    Comment,
    /// `'...'`; `national` for `N'...'`. `value` is unescaped.
    Str {
        /// Unescaped content.
        value: String,
        /// Had an `N` prefix.
        national: bool,
    },
    /// `[x]` or `"x"`; `value` is unescaped.
    QIdent {
        /// Unescaped identifier.
        value: String,
    },
    /// A bare word (identifier or keyword).
    Ident,
    /// `@name` (text includes the `@`).
    Var,
    /// `@@name` (text includes the `@@`).
    SysVar,
    /// A numeric literal.
    Num,
    /// `0x...` binary literal (text includes the `0x`).
    Hex,
    /// Operators and punctuation.
    Op,
    /// A bound parameter made by the translator (`?index`).
    Param {
        /// 1-based SQLite parameter number.
        index: usize,
    },
    /// A synthetic SQLite fragment made by the translator.
    Raw,
}

/// One token with its source text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The kind.
    pub kind: Kind,
    /// The source text (or, for tokens made by the translator, the SQLite text).
    pub text: String,
    /// Byte offset in the source (0 for synthetic tokens).
    pub start: usize,
}

impl Token {
    /// A synthetic token rendered verbatim.
    pub fn raw(kind: Kind, text: impl Into<String>) -> Token {
        Token {
            kind,
            text: text.into(),
            start: 0,
        }
    }

    /// True for whitespace and comments.
    pub fn is_trivia(&self) -> bool {
        matches!(self.kind, Kind::Ws | Kind::Comment)
    }

    /// Case-insensitive keyword test for bare words.
    pub fn is_kw(&self, kw: &str) -> bool {
        self.kind == Kind::Ident && self.text.eq_ignore_ascii_case(kw)
    }

    /// True for the operator `op`.
    pub fn is_op(&self, op: &str) -> bool {
        self.kind == Kind::Op && self.text == op
    }

    /// Identifier name for bare or quoted identifiers.
    pub fn ident_name(&self) -> Option<&str> {
        match &self.kind {
            Kind::Ident => Some(&self.text),
            Kind::QIdent { value } => Some(value),
            _ => None,
        }
    }

    /// Upper-cased text of a bare word (empty for other kinds).
    pub fn upper(&self) -> String {
        if self.kind == Kind::Ident {
            self.text.to_ascii_uppercase()
        } else {
            String::new()
        }
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || c == '#'
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '#' || c == '$'
}

/// Splits T-SQL text into tokens. Fails on unterminated literals/comments.
pub fn lex(src: &str) -> Result<Vec<Token>, SqlError> {
    let chars: Vec<(usize, char)> = src.char_indices().collect();
    let n = chars.len();
    let at = |i: usize| chars.get(i).map(|c| c.1);
    let offset = |i: usize| chars.get(i).map_or(src.len(), |c| c.0);
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < n {
        let start = i;
        let c = chars[i].1;
        let kind = if c.is_whitespace() {
            while at(i).is_some_and(char::is_whitespace) {
                i += 1;
            }
            Kind::Ws
        } else if c == '-' && at(i + 1) == Some('-') {
            while at(i).is_some_and(|c| c != '\n') {
                i += 1;
            }
            Kind::Comment
        } else if c == '/' && at(i + 1) == Some('*') {
            let mut depth = 0;
            loop {
                match (at(i), at(i + 1)) {
                    (Some('/'), Some('*')) => {
                        depth += 1;
                        i += 2;
                    }
                    (Some('*'), Some('/')) => {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    }
                    (Some(_), _) => i += 1,
                    (None, _) => {
                        return Err(SqlError::new(113, "Missing end comment mark '*/'."));
                    }
                }
            }
            Kind::Comment
        } else if c == '\'' || ((c == 'N' || c == 'n') && at(i + 1) == Some('\'')) {
            let national = c != '\'';
            if national {
                i += 1;
            }
            i += 1;
            let mut value = String::new();
            loop {
                match at(i) {
                    Some('\'') if at(i + 1) == Some('\'') => {
                        value.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        value.push(ch);
                        i += 1;
                    }
                    None => {
                        let shown: String = value.chars().take(40).collect();
                        return Err(SqlError::new(
                            105,
                            format!(
                                "Unclosed quotation mark after the character string '{shown}'."
                            ),
                        ));
                    }
                }
            }
            Kind::Str { value, national }
        } else if c == '[' || c == '"' {
            let close = if c == '[' { ']' } else { '"' };
            i += 1;
            let mut value = String::new();
            loop {
                match at(i) {
                    Some(ch) if ch == close && at(i + 1) == Some(close) => {
                        value.push(close);
                        i += 2;
                    }
                    Some(ch) if ch == close => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        value.push(ch);
                        i += 1;
                    }
                    None => {
                        return Err(SqlError::new(
                            105,
                            format!("Unclosed quotation mark after the identifier '{value}'."),
                        ));
                    }
                }
            }
            Kind::QIdent { value }
        } else if c == '@' {
            let sys = at(i + 1) == Some('@');
            i += if sys { 2 } else { 1 };
            while at(i).is_some_and(is_ident_char) {
                i += 1;
            }
            if sys {
                Kind::SysVar
            } else {
                Kind::Var
            }
        } else if c == '0' && matches!(at(i + 1), Some('x' | 'X')) {
            i += 2;
            while at(i).is_some_and(|c| c.is_ascii_hexdigit()) {
                i += 1;
            }
            Kind::Hex
        } else if c.is_ascii_digit() || (c == '.' && at(i + 1).is_some_and(|c| c.is_ascii_digit()))
        {
            while at(i).is_some_and(|c| c.is_ascii_digit() || c == '.') {
                i += 1;
            }
            if matches!(at(i), Some('e' | 'E'))
                && (at(i + 1).is_some_and(|c| c.is_ascii_digit())
                    || (matches!(at(i + 1), Some('+' | '-'))
                        && at(i + 2).is_some_and(|c| c.is_ascii_digit())))
            {
                i += 2;
                while at(i).is_some_and(|c| c.is_ascii_digit()) {
                    i += 1;
                }
            }
            Kind::Num
        } else if is_ident_start(c) {
            while at(i).is_some_and(is_ident_char) {
                i += 1;
            }
            Kind::Ident
        } else {
            let two: String = chars[i..(i + 2).min(n)].iter().map(|c| c.1).collect();
            i += if matches!(
                two.as_str(),
                "<=" | ">=" | "<>" | "!=" | "!<" | "!>" | "||" | "+=" | "-=" | "*=" | "/=" | "::"
            ) {
                2
            } else {
                1
            };
            Kind::Op
        };
        let (s, e) = (offset(start), offset(i));
        tokens.push(Token {
            kind,
            text: src[s..e].to_string(),
            start: s,
        });
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<(Kind, String)> {
        lex(src)
            .unwrap()
            .into_iter()
            .filter(|t| !t.is_trivia())
            .map(|t| (t.kind, t.text))
            .collect()
    }

    #[test]
    fn lexes_literals_identifiers_and_comments() {
        let toks = kinds(
            "SELECT [a]]b], N'it''s', @P1, @@TRANCOUNT, 0x1F, 1.5e3 -- c;\n/* x /* y */ ; */ <> ;",
        );
        assert_eq!(toks[0], (Kind::Ident, "SELECT".into()));
        assert_eq!(
            toks[1].0,
            Kind::QIdent {
                value: "a]b".into()
            }
        );
        assert_eq!(
            toks[3].0,
            Kind::Str {
                value: "it's".into(),
                national: true
            }
        );
        assert_eq!(toks[5], (Kind::Var, "@P1".into()));
        assert_eq!(toks[7], (Kind::SysVar, "@@TRANCOUNT".into()));
        assert_eq!(toks[9], (Kind::Hex, "0x1F".into()));
        assert_eq!(toks[11], (Kind::Num, "1.5e3".into()));
        assert_eq!(toks[12], (Kind::Op, "<>".into()));
        assert_eq!(toks[13], (Kind::Op, ";".into()));
        assert_eq!(toks.len(), 14);
    }

    #[test]
    fn unterminated_literals_are_errors() {
        assert_eq!(lex("SELECT 'abc").unwrap_err().number, 105);
        assert_eq!(lex("SELECT [abc").unwrap_err().number, 105);
        assert_eq!(lex("SELECT /* abc").unwrap_err().number, 113);
    }

    #[test]
    fn spans_cover_source() {
        let src = "a  'é' b";
        let toks = lex(src).unwrap();
        let joined: String = toks.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(joined, src);
        assert_eq!(toks[2].start, 3);
    }
}
