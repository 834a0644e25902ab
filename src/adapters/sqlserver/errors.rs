//! tiberius' errors as [`StoreError`]s, keeping SQL Server's error numbers (which say what is transient).

use crate::store::StoreError;

/// A tiberius error as a store error: the server's own errors keep their number, I/O, TLS and protocol
/// failures are connection errors.
pub(super) fn map_error(e: tiberius::error::Error) -> StoreError {
    use tiberius::error::Error as E;
    match e {
        E::Server(token) => StoreError::Database {
            number: token.code(),
            message: token.message().to_string(),
        },
        E::Io { message, .. } => StoreError::Connection(message),
        E::Tls(message) => StoreError::Connection(format!("TLS: {message}")),
        E::Protocol(message) => StoreError::Connection(format!("protocol error: {message}")),
        E::Routing { host, port } => StoreError::Connection(format!(
            "the server redirected the connection too many times (last to {host}:{port})"
        )),
        other => StoreError::Data {
            column: String::new(),
            problem: other.to_string(),
        },
    }
}

/// `StoreError` is not `Clone`; the failure signal hands the same error to several waiters.
pub(super) fn duplicate(e: &StoreError) -> StoreError {
    match e {
        StoreError::Database { number, message } => StoreError::Database {
            number: *number,
            message: message.clone(),
        },
        StoreError::Connection(m) => StoreError::Connection(m.clone()),
        StoreError::Data { column, problem } => StoreError::Data {
            column: column.clone(),
            problem: problem.clone(),
        },
        StoreError::Config(m) => StoreError::Config(m.clone()),
        StoreError::NotInitialised(m) => StoreError::NotInitialised(m.clone()),
        StoreError::TooOld { found, needed } => StoreError::TooOld {
            found: *found,
            needed: *needed,
        },
        StoreError::TooNew { found, supported } => StoreError::TooNew {
            found: *found,
            supported: *supported,
        },
        StoreError::UnusableObject { object, problem } => StoreError::UnusableObject {
            object: object.clone(),
            problem: problem.clone(),
        },
    }
}
