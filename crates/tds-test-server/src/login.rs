//! LOGIN7 parsing.
//!
//! The fixed part (36 bytes: length, TDS version, packet size, client data,
//! option flags) is followed by offset/length pairs pointing at UTF-16LE
//! strings inside the same message (lengths in characters). The password is
//! obfuscated by swapping the nibbles of every byte and XOR-ing with `0xA5`.
//! When `OptionFlags3` has `fExtension`, the `ibExtension` field points at a
//! 4-byte offset of the FeatureExt block, where `FEDAUTH` (0x02) carries the
//! Entra access token for `AuthMethod::AADToken`.

use crate::error::ProtocolError;
use crate::wire::{utf16_to_string, Reader};
use std::fmt;

const FEATURE_FEDAUTH: u8 = 0x02;
const FEATURE_TERMINATOR: u8 = 0xFF;
const FEDAUTH_LIBRARY_SECURITY_TOKEN: u8 = 0x01;
const OPTION_FLAGS3_EXTENSION: u8 = 0x10;

/// A federated-authentication token from the FEDAUTH feature extension.
#[derive(Clone, PartialEq, Eq)]
pub struct FedAuth {
    /// The access token (never logged).
    pub token: String,
    /// `fFedAuthEcho`: the client saw FEDAUTHREQUIRED in our PRELOGIN.
    pub echo: bool,
}

impl fmt::Debug for FedAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FedAuth")
            .field("token", &"<redacted>")
            .field("echo", &self.echo)
            .finish()
    }
}

/// The parts of LOGIN7 this server uses.
#[derive(Clone, PartialEq, Eq)]
pub struct Login7 {
    /// Requested TDS version (as sent, little-endian decoded).
    pub tds_version: u32,
    /// Requested packet size.
    pub packet_size: u32,
    /// Client host name.
    pub hostname: String,
    /// SQL login name (empty for token authentication).
    pub user: String,
    /// De-obfuscated password (never logged).
    pub password: String,
    /// Application name.
    pub app_name: String,
    /// Initial database (may be empty).
    pub database: String,
    /// FEDAUTH feature extension, when present.
    pub fedauth: Option<FedAuth>,
}

impl fmt::Debug for Login7 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login7")
            .field("tds_version", &format_args!("{:#010x}", self.tds_version))
            .field("packet_size", &self.packet_size)
            .field("hostname", &self.hostname)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("app_name", &self.app_name)
            .field("database", &self.database)
            .field("fedauth", &self.fedauth)
            .finish()
    }
}

/// Reverses the LOGIN7 password obfuscation.
pub fn deobfuscate_password(bytes: &[u8]) -> String {
    let plain: Vec<u8> = bytes
        .iter()
        .map(|b| {
            let x = b ^ 0xA5;
            x.rotate_left(4)
        })
        .collect();
    utf16_to_string(&plain)
}

/// Applies the LOGIN7 password obfuscation (used by tests).
pub fn obfuscate_password(password: &str) -> Vec<u8> {
    crate::wire::string_to_utf16(password)
        .into_iter()
        .map(|b| b.rotate_left(4) ^ 0xA5)
        .collect()
}

fn string_at(payload: &[u8], offset: usize, chars: usize) -> Result<&[u8], ProtocolError> {
    let len = chars * 2;
    payload
        .get(offset..offset.saturating_add(len))
        .ok_or_else(|| ProtocolError::malformed("LOGIN7 string points outside the message"))
}

/// Parses a LOGIN7 payload.
pub fn parse(payload: &[u8]) -> Result<Login7, ProtocolError> {
    let mut r = Reader::new(payload);
    let _length = r.u32_le()?;
    let tds_version = r.u32_le()?;
    let packet_size = r.u32_le()?;
    r.skip(4 + 4 + 4)?; // client program version, client pid, connection id
    let _flags1 = r.u8()?;
    let _flags2 = r.u8()?;
    let _type_flags = r.u8()?;
    let flags3 = r.u8()?;
    r.skip(4 + 4)?; // time zone, LCID

    let mut pair = || -> Result<(usize, usize), ProtocolError> {
        Ok((r.u16_le()? as usize, r.u16_le()? as usize))
    };
    let hostname = pair()?;
    let user = pair()?;
    let password = pair()?;
    let app_name = pair()?;
    let _server_name = pair()?;
    let extension = pair()?;
    let _interface = pair()?;
    let _language = pair()?;
    let database = pair()?;

    let text = |(off, len): (usize, usize)| -> Result<String, ProtocolError> {
        Ok(utf16_to_string(string_at(payload, off, len)?))
    };

    let fedauth = if flags3 & OPTION_FLAGS3_EXTENSION != 0 && extension.1 >= 4 {
        let ext = payload
            .get(extension.0..extension.0 + 4)
            .ok_or_else(|| ProtocolError::malformed("LOGIN7 extension offset out of bounds"))?;
        let feature_offset = u32::from_le_bytes([ext[0], ext[1], ext[2], ext[3]]) as usize;
        let features = payload
            .get(feature_offset..)
            .ok_or_else(|| ProtocolError::malformed("FeatureExt offset out of bounds"))?;
        parse_features(features)?
    } else {
        None
    };

    Ok(Login7 {
        tds_version,
        packet_size,
        hostname: text(hostname)?,
        user: text(user)?,
        password: deobfuscate_password(string_at(payload, password.0, password.1)?),
        app_name: text(app_name)?,
        database: text(database)?,
        fedauth,
    })
}

fn parse_features(data: &[u8]) -> Result<Option<FedAuth>, ProtocolError> {
    let mut r = Reader::new(data);
    let mut fedauth = None;
    loop {
        let id = r.u8()?;
        if id == FEATURE_TERMINATOR {
            return Ok(fedauth);
        }
        let len = r.u32_le()? as usize;
        let body = r.bytes(len)?;
        if id == FEATURE_FEDAUTH {
            let mut b = Reader::new(body);
            let options = b.u8()?;
            let library = options >> 1;
            if library != FEDAUTH_LIBRARY_SECURITY_TOKEN {
                return Err(ProtocolError::Unexpected(format!(
                    "FEDAUTH library {library:#04x} (only SECURITYTOKEN is supported)"
                )));
            }
            let token_len = b.u32_le()? as usize;
            let token = utf16_to_string(b.bytes(token_len)?);
            fedauth = Some(FedAuth {
                token,
                echo: options & 1 != 0,
            });
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a LOGIN7 payload the way tiberius does (used by unit tests).
    pub(crate) fn build_login7(
        user: &str,
        password: &str,
        db: &str,
        token: Option<&str>,
    ) -> Vec<u8> {
        let mut fixed = Vec::new();
        fixed.extend_from_slice(&0u32.to_le_bytes());
        fixed.extend_from_slice(&0x7400_0004u32.to_le_bytes());
        fixed.extend_from_slice(&4096u32.to_le_bytes());
        fixed.extend_from_slice(&[0u8; 12]);
        let flags3 = if token.is_some() {
            OPTION_FLAGS3_EXTENSION
        } else {
            0
        };
        fixed.extend_from_slice(&[0xE0, 0x03, 0x00, flags3]);
        fixed.extend_from_slice(&[0u8; 8]);
        let strings: Vec<Vec<u8>> = vec![
            crate::wire::string_to_utf16("host"),
            crate::wire::string_to_utf16(user),
            obfuscate_password(password),
            crate::wire::string_to_utf16("app"),
            crate::wire::string_to_utf16("srv"),
            Vec::new(), // extension placeholder
            Vec::new(),
            Vec::new(),
            crate::wire::string_to_utf16(db),
        ];
        let header_len = 36 + 9 * 4 + 6 + 3 * 4 + 4;
        let mut data = Vec::new();
        let mut pairs = Vec::new();
        let mut ext_pair_index = None;
        for (i, s) in strings.iter().enumerate() {
            let off = header_len + data.len();
            if i == 5 && token.is_some() {
                ext_pair_index = Some(pairs.len());
                pairs.push((off as u16, 4u16));
                data.extend_from_slice(&[0u8; 4]);
                continue;
            }
            pairs.push((off as u16, (s.len() / 2) as u16));
            data.extend_from_slice(s);
        }
        if let (Some(token), Some(idx)) = (token, ext_pair_index) {
            let feature_off = (header_len + data.len()) as u32;
            let ext_pos = pairs[idx].0 as usize - header_len;
            data[ext_pos..ext_pos + 4].copy_from_slice(&feature_off.to_le_bytes());
            let tok = crate::wire::string_to_utf16(token);
            data.push(FEATURE_FEDAUTH);
            data.extend_from_slice(&((1 + 4 + tok.len()) as u32).to_le_bytes());
            data.push(FEDAUTH_LIBRARY_SECURITY_TOKEN << 1 | 1);
            data.extend_from_slice(&(tok.len() as u32).to_le_bytes());
            data.extend_from_slice(&tok);
            data.push(FEATURE_TERMINATOR);
        }
        let mut out = fixed;
        for (o, l) in pairs {
            out.extend_from_slice(&o.to_le_bytes());
            out.extend_from_slice(&l.to_le_bytes());
        }
        out.extend_from_slice(&[0u8; 6]); // client id
        out.extend_from_slice(&[0u8; 12]); // sspi, attach db, change password
        out.extend_from_slice(&[0u8; 4]); // cbSSPILong
        assert_eq!(out.len(), header_len);
        out.extend_from_slice(&data);
        let len = out.len() as u32;
        out[0..4].copy_from_slice(&len.to_le_bytes());
        out
    }

    #[test]
    fn password_obfuscation_roundtrips() {
        let obf = obfuscate_password("S3cret!€");
        assert_eq!(deobfuscate_password(&obf), "S3cret!€");
    }

    #[test]
    fn parses_sql_login() {
        let payload = build_login7("sa", "pw", "procfwk", None);
        let login = parse(&payload).unwrap();
        assert_eq!(login.user, "sa");
        assert_eq!(login.password, "pw");
        assert_eq!(login.database, "procfwk");
        assert_eq!(login.packet_size, 4096);
        assert!(login.fedauth.is_none());
        assert!(!format!("{login:?}").contains("pw\""));
    }

    #[test]
    fn parses_fedauth_token() {
        let payload = build_login7("", "", "procfwk", Some("eyJ0eXAi.token"));
        let login = parse(&payload).unwrap();
        let fa = login.fedauth.unwrap();
        assert_eq!(fa.token, "eyJ0eXAi.token");
        assert!(fa.echo);
        assert!(!format!("{fa:?}").contains("eyJ"));
    }

    #[test]
    fn mutated_logins_never_panic() {
        let payload = build_login7("sa", "pw", "procfwk", Some("tok"));
        assert!(parse(&payload).is_ok(), "the whole login parses");
        for len in 0..payload.len() {
            assert!(parse(&payload[..len]).is_err(), "cut at {len} bytes");
        }
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..3000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut m = payload.clone();
            let pos = (seed % m.len() as u64) as usize;
            m[pos] = (seed >> 40) as u8;
            let _ = parse(&m);
            let _ = crate::prelogin::parse(&m);
        }
    }

    #[test]
    fn truncated_login_is_an_error() {
        let payload = build_login7("sa", "pw", "procfwk", None);
        assert!(parse(&payload[..50]).is_err());
        assert!(parse(&payload[..payload.len() - 4]).is_err());
    }
}
