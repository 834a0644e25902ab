//! PRELOGIN negotiation.
//!
//! The client's PRELOGIN is an option table (token, big-endian offset,
//! big-endian length, terminated by `0xFF`) followed by the option data. The
//! server answers with its own table: VERSION, ENCRYPTION (always
//! `ENCRYPT_NOT_SUP`: this server speaks plain TCP only, so clients must use
//! `encrypt=DANGER_PLAINTEXT`), INSTOPT, THREADID, MARS (off) and, when the
//! client asked for federated authentication, FEDAUTHREQUIRED.

use crate::error::ProtocolError;
use crate::wire::Reader;

const OPT_VERSION: u8 = 0x00;
const OPT_ENCRYPTION: u8 = 0x01;
const OPT_INSTOPT: u8 = 0x02;
const OPT_THREADID: u8 = 0x03;
const OPT_MARS: u8 = 0x04;
const OPT_FEDAUTHREQUIRED: u8 = 0x06;
const OPT_TERMINATOR: u8 = 0xFF;

/// `ENCRYPT_NOT_SUP`.
pub const ENCRYPT_NOT_SUP: u8 = 0x02;

/// What the client announced in its PRELOGIN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreLoginRequest {
    /// Requested encryption level (0 off, 1 on, 2 not supported, 3 required).
    pub encryption: Option<u8>,
    /// Client asked for MARS.
    pub mars: bool,
    /// Client will authenticate with a federated (Entra) token.
    pub fed_auth_required: bool,
}

/// Parses a client PRELOGIN payload.
pub fn parse(payload: &[u8]) -> Result<PreLoginRequest, ProtocolError> {
    let mut table = Reader::new(payload);
    let mut req = PreLoginRequest::default();
    loop {
        let token = table.u8()?;
        if token == OPT_TERMINATOR {
            break;
        }
        let offset = table.u16_be()? as usize;
        let length = table.u16_be()? as usize;
        let data = payload
            .get(offset..offset.saturating_add(length))
            .ok_or_else(|| {
                ProtocolError::malformed(format!("prelogin option {token:#04x} out of bounds"))
            })?;
        match token {
            OPT_ENCRYPTION => req.encryption = data.first().copied(),
            OPT_MARS => req.mars = data.first().is_some_and(|b| *b != 0),
            OPT_FEDAUTHREQUIRED => req.fed_auth_required = data.first().is_some_and(|b| *b != 0),
            _ => {}
        }
    }
    Ok(req)
}

/// Builds the server's PRELOGIN response payload.
pub fn response(req: &PreLoginRequest) -> Vec<u8> {
    // Version 16.0.4000.0 (SQL Server 2022 family).
    let mut options: Vec<(u8, Vec<u8>)> = vec![
        (OPT_VERSION, vec![16, 0, 0x0F, 0xA0, 0, 0]),
        (OPT_ENCRYPTION, vec![ENCRYPT_NOT_SUP]),
        (OPT_INSTOPT, vec![0]),
        // Servers send an empty THREADID.
        (OPT_THREADID, Vec::new()),
        (OPT_MARS, vec![0]),
    ];
    if req.fed_auth_required {
        options.push((OPT_FEDAUTHREQUIRED, vec![1]));
    }
    let table_len = options.len() * 5 + 1;
    let mut table = Vec::with_capacity(table_len);
    let mut data = Vec::new();
    for (token, value) in &options {
        let offset = (table_len + data.len()) as u16;
        table.push(*token);
        table.extend_from_slice(&offset.to_be_bytes());
        table.extend_from_slice(&(value.len() as u16).to_be_bytes());
        data.extend_from_slice(value);
    }
    table.push(OPT_TERMINATOR);
    table.extend_from_slice(&data);
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_roundtrips_through_parser() {
        let req = PreLoginRequest {
            encryption: Some(2),
            mars: false,
            fed_auth_required: true,
        };
        let bytes = response(&req);
        let parsed = parse(&bytes).unwrap();
        assert_eq!(parsed.encryption, Some(ENCRYPT_NOT_SUP));
        assert!(parsed.fed_auth_required);
        assert!(!parsed.mars);
    }

    #[test]
    fn rejects_out_of_bounds_options() {
        assert!(parse(&[0x01, 0x00, 0x40, 0x00, 0x01, 0xFF]).is_err());
        assert!(parse(&[0x01, 0x00]).is_err());
    }
}
