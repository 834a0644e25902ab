//! SQL Server's `ENCRYPTBYPASSPHRASE` / `DECRYPTBYPASSPHRASE` in the version-2 layout (SQL Server 2017+),
//! which procfwk uses for `dbo.ServicePrincipals.PrincipalSecret` (`SPNHandlingMethod = StoreInDatabase`).
//! The SQLite store registers [`decrypt`] as its `DECRYPTBYPASSPHRASE`, so one credential statement serves
//! both engines; tests use [`encrypt`] to make secrets the way procfwk's `AddServicePrincipal` does.
//!
//! Layout: `02 00 00 00`, a 16-byte IV, then AES-256-CBC (PKCS#7) under SHA-256 of the passphrase (as
//! `NVARCHAR`: UTF-16LE) of: magic `0xBAADF00D` (little-endian), 2 reserved bytes, the clear text's
//! length (2 bytes, little-endian), the clear text. A wrong passphrase or damaged data gives `None`
//! (SQL Server answers NULL). Version 1 (triple DES) is not read here.

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use sha2::{Digest, Sha256};

type Encryptor = cbc::Encryptor<aes::Aes256>;
type Decryptor = cbc::Decryptor<aes::Aes256>;

const VERSION_2: [u8; 4] = [2, 0, 0, 0];
const MAGIC: [u8; 4] = [0x0d, 0xf0, 0xad, 0xba];
/// SQL Server encrypts at most 8000 bytes.
const MAX_CLEAR: usize = 8000;

/// A string as SQL Server holds an `NVARCHAR`: UTF-16LE.
pub fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// UTF-16LE bytes back to a string (`CAST(… AS NVARCHAR)`); `None` for an odd length or bad surrogates.
pub fn from_utf16le(bytes: &[u8]) -> Option<String> {
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).ok()
}

fn key(passphrase: &str) -> [u8; 32] {
    Sha256::digest(utf16le(passphrase)).into()
}

/// `ENCRYPTBYPASSPHRASE(passphrase, clear)` with the given IV (SQL Server draws a random one).
pub fn encrypt(passphrase: &str, clear: &[u8], iv: [u8; 16]) -> Option<Vec<u8>> {
    if clear.len() > MAX_CLEAR {
        return None;
    }
    let length = u16::try_from(clear.len()).ok()?;
    let mut inner = Vec::with_capacity(8 + clear.len() + 16);
    inner.extend_from_slice(&MAGIC);
    inner.extend_from_slice(&[0, 0]);
    inner.extend_from_slice(&length.to_le_bytes());
    inner.extend_from_slice(clear);
    let used = inner.len();
    inner.resize(used + 16, 0);
    let sealed = Encryptor::new(&key(passphrase).into(), &iv.into())
        .encrypt_padded_mut::<Pkcs7>(&mut inner, used)
        .ok()?
        .to_vec();
    let mut out = Vec::with_capacity(20 + sealed.len());
    out.extend_from_slice(&VERSION_2);
    out.extend_from_slice(&iv);
    out.extend_from_slice(&sealed);
    Some(out)
}

/// `DECRYPTBYPASSPHRASE(passphrase, data)`: the clear bytes, or `None` (SQL Server's NULL).
pub fn decrypt(passphrase: &str, data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < 36 || data[..4] != VERSION_2 || !(data.len() - 20).is_multiple_of(16) {
        return None;
    }
    let iv: [u8; 16] = data[4..20].try_into().ok()?;
    let mut body = data[20..].to_vec();
    let plain = Decryptor::new(&key(passphrase).into(), &iv.into())
        .decrypt_padded_mut::<Pkcs7>(&mut body)
        .ok()?;
    if plain.len() < 8 || plain[..4] != MAGIC {
        return None;
    }
    let length = usize::from(u16::from_le_bytes([plain[6], plain[7]]));
    plain.get(8..8 + length).map(<[u8]>::to_vec)
}

/// Lower-case hex (how both backends return binary columns) back to bytes.
pub fn from_hex(hex: &str) -> Option<Vec<u8>> {
    let hex = hex.trim();
    let hex = hex
        .strip_prefix("0x")
        .or_else(|| hex.strip_prefix("0X"))
        .unwrap_or(hex);
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_passphrase() {
        let clear = utf16le("sim-secret-A-7f3c9e1b");
        let data = encrypt("FrameworkFactoryADF", &clear, [7; 16]).unwrap_or_default();
        assert_eq!(&data[..4], &VERSION_2);
        assert_eq!(data.len(), 20 + 64, "8 + 42 bytes padded to 64");
        assert_eq!(
            decrypt("FrameworkFactoryADF", &data).as_deref(),
            Some(&clear[..])
        );
        assert_eq!(decrypt("FrameworkFactoryADFWait 1", &data), None);
        assert_eq!(decrypt("FrameworkFactoryADF", &data[..30]), None);
        assert_eq!(
            from_utf16le(&decrypt("FrameworkFactoryADF", &data).unwrap_or_default()).as_deref(),
            Some("sim-secret-A-7f3c9e1b")
        );
    }

    #[test]
    fn nothing_panics_on_any_input() {
        for len in 0..80 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
            let _ = decrypt("p", &data);
            let mut v2 = VERSION_2.to_vec();
            v2.extend_from_slice(&data);
            let _ = decrypt("p", &v2);
        }
        assert!(encrypt("p", &[0; MAX_CLEAR + 1], [0; 16]).is_none());
        assert_eq!(from_hex("0a0B"), Some(vec![10, 11]));
        assert_eq!(from_hex("0xff"), Some(vec![255]));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("é1"), None);
        assert_eq!(from_utf16le(&[0x3d, 0xd8]), None, "a lone surrogate");
    }
}
