//! A bounds-checked little reader over a received message payload.
//!
//! Every accessor returns [`ProtocolError::Malformed`] instead of panicking
//! when the payload is shorter than the field being read, so a truncated or
//! hostile packet only closes its own connection.

use crate::error::ProtocolError;

/// Sequential reader over a byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Current offset from the start of the buffer.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// True when everything was consumed.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The unread rest of the buffer.
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    /// Reads `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or_else(|| {
                ProtocolError::malformed(format!(
                    "need {n} bytes at offset {}, only {} left",
                    self.pos,
                    self.remaining()
                ))
            })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// Skips `n` bytes.
    pub fn skip(&mut self, n: usize) -> Result<(), ProtocolError> {
        self.bytes(n).map(|_| ())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.array::<1>()?[0])
    }

    /// Little-endian u16.
    pub fn u16_le(&mut self) -> Result<u16, ProtocolError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// Big-endian u16.
    pub fn u16_be(&mut self) -> Result<u16, ProtocolError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// Little-endian i16.
    pub fn i16_le(&mut self) -> Result<i16, ProtocolError> {
        Ok(i16::from_le_bytes(self.array()?))
    }

    /// Little-endian u32.
    pub fn u32_le(&mut self) -> Result<u32, ProtocolError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// Little-endian i32.
    pub fn i32_le(&mut self) -> Result<i32, ProtocolError> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    /// Little-endian u64.
    pub fn u64_le(&mut self) -> Result<u64, ProtocolError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Little-endian i64.
    pub fn i64_le(&mut self) -> Result<i64, ProtocolError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// Little-endian f32.
    pub fn f32_le(&mut self) -> Result<f32, ProtocolError> {
        Ok(f32::from_le_bytes(self.array()?))
    }

    /// Little-endian f64.
    pub fn f64_le(&mut self) -> Result<f64, ProtocolError> {
        Ok(f64::from_le_bytes(self.array()?))
    }

    /// `chars` UTF-16LE code units decoded to a string (lossy on bad surrogates).
    pub fn utf16(&mut self, chars: usize) -> Result<String, ProtocolError> {
        let bytes = self.bytes(
            chars
                .checked_mul(2)
                .ok_or_else(|| ProtocolError::malformed("utf-16 length overflow"))?,
        )?;
        Ok(utf16_to_string(bytes))
    }

    /// A `B_VARCHAR`: one length byte (in characters) then UTF-16LE.
    pub fn b_varchar(&mut self) -> Result<String, ProtocolError> {
        let len = self.u8()? as usize;
        self.utf16(len)
    }
}

/// Decodes UTF-16LE bytes (an odd trailing byte is ignored).
pub fn utf16_to_string(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// Encodes a string as UTF-16LE bytes.
pub fn string_to_utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_reports_truncation() {
        let data = [1u8, 2, 0, 0x34, 0x12];
        let mut r = Reader::new(&data);
        assert_eq!(r.u8().unwrap(), 1);
        assert_eq!(r.u16_le().unwrap(), 2);
        assert_eq!(r.u16_be().unwrap(), 0x3412);
        assert!(r.is_empty());
        assert!(r.u8().is_err());
    }

    #[test]
    fn utf16_roundtrip() {
        let bytes = string_to_utf16("héllo ✓");
        assert_eq!(utf16_to_string(&bytes), "héllo ✓");
        let mut r = Reader::new(&bytes);
        assert_eq!(r.utf16(7).unwrap(), "héllo ✓");
    }
}
