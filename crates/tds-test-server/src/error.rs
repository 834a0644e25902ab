//! Error types.
//!
//! * [`ServerError`] is the public error of [`crate::TdsTestServer::start`].
//! * [`ProtocolError`] is internal: a malformed or unexpected client message.
//!   It closes that one connection (and is logged); it never reaches the client
//!   as a TDS token and never panics the server.
//! * [`SqlError`] is what the client sees: an `ERROR` token with a SQL Server
//!   error number, state, class and message.

use std::fmt;

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding the loopback listener failed.
    #[error("cannot bind the TDS test server listener: {0}")]
    Bind(#[source] std::io::Error),
    /// Opening or initialising the SQLite database failed.
    #[error("cannot initialise the SQLite database {path}: {source}")]
    Database {
        /// The database file.
        path: String,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The PostgreSQL backend could not be prepared.
    #[error("{what}: {source}")]
    Postgres {
        /// What was being done.
        what: String,
        /// The PostgreSQL error.
        #[source]
        source: postgres::Error,
    },
    /// A backend session could not be opened.
    #[error("{0}")]
    Backend(String),
    /// One of `ServerOptions::init_sql` failed on the PostgreSQL backend.
    #[error("init_sql batch #{index} failed: {error}")]
    InitTsql {
        /// Position of the batch in `init_sql`.
        index: usize,
        /// The error, as a client would see it.
        error: SqlError,
    },
    /// One of `ServerOptions::init_sql` failed.
    #[error("init_sql statement #{index} failed: {source}")]
    InitSql {
        /// Position of the statement in `init_sql`.
        index: usize,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
}

/// A malformed, truncated or unexpected client message. Closes the connection.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// Socket I/O failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes do not form a valid message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A valid message arrived in a state where it is not allowed.
    #[error("unexpected message: {0}")]
    Unexpected(String),
}

impl ProtocolError {
    /// Shorthand for [`ProtocolError::Malformed`].
    pub(crate) fn malformed(msg: impl Into<String>) -> Self {
        ProtocolError::Malformed(msg.into())
    }
}

/// An error reported to the client as a TDS `ERROR` token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    /// SQL Server error number (e.g. 2627).
    pub number: u32,
    /// Error state.
    pub state: u8,
    /// Severity class (16 for user errors).
    pub class: u8,
    /// Message text.
    pub message: String,
}

impl SqlError {
    /// A class-16 error with state 1.
    pub fn new(number: u32, message: impl Into<String>) -> Self {
        SqlError {
            number,
            state: 1,
            class: 16,
            message: message.into(),
        }
    }

    /// Error 102, "Incorrect syntax near ...".
    pub fn syntax(near: impl fmt::Display) -> Self {
        SqlError::new(102, format!("Incorrect syntax near '{near}'."))
    }

    /// A construct this server does not support (error 40517, as Azure SQL
    /// uses for unsupported features).
    pub fn unsupported(what: impl fmt::Display) -> Self {
        SqlError::new(40517, format!("tds-test-server does not support {what}."))
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error {}: {}", self.number, self.message)
    }
}

impl std::error::Error for SqlError {}
