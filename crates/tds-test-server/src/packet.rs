//! TDS packet framing.
//!
//! Every TDS message travels as one or more packets, each with an 8-byte
//! header: type, status (bit 0 = end of message), big-endian total length,
//! big-endian SPID, packet id and window. [`read_message`] reassembles the
//! packets of one client message; [`frame_message`] splits a server response
//! into packets no larger than the negotiated packet size.

use crate::error::ProtocolError;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Size of a packet header.
pub const HEADER_LEN: usize = 8;
/// Largest client message accepted (protects memory; a test server needs less).
pub const MAX_MESSAGE_LEN: usize = 64 * 1024 * 1024;
/// Smallest packet size a client may negotiate.
pub const MIN_PACKET_SIZE: usize = 512;
/// Largest packet size (TDS limit).
pub const MAX_PACKET_SIZE: usize = 32767;

/// Packet (message) types used by this server.
pub mod packet_type {
    /// SQL batch.
    pub const SQL_BATCH: u8 = 0x01;
    /// Remote procedure call.
    pub const RPC: u8 = 0x03;
    /// Tabular result (server to client).
    pub const TABULAR_RESULT: u8 = 0x04;
    /// Attention (cancel).
    pub const ATTENTION: u8 = 0x06;
    /// Transaction manager request.
    pub const TRANSACTION_MANAGER: u8 = 0x0E;
    /// LOGIN7.
    pub const LOGIN7: u8 = 0x10;
    /// PRELOGIN.
    pub const PRELOGIN: u8 = 0x12;
}

/// Status bit: last packet of the message.
pub const STATUS_EOM: u8 = 0x01;
/// Status bit: reset the connection before processing (TDS 7.1+).
pub const STATUS_RESET_CONNECTION: u8 = 0x08;
/// Status bit: reset the connection but keep the transaction (TDS 7.3+).
pub const STATUS_RESET_CONNECTION_SKIP_TRAN: u8 = 0x10;

/// One reassembled client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Packet type of the first packet.
    pub ty: u8,
    /// Status bits of the first packet (without EOM).
    pub status: u8,
    /// Concatenated payloads.
    pub payload: Vec<u8>,
}

impl Message {
    /// True when the client asked for a connection reset.
    pub fn reset_connection(&self) -> bool {
        self.status & (STATUS_RESET_CONNECTION | STATUS_RESET_CONNECTION_SKIP_TRAN) != 0
    }
}

/// Reads packets until one with the end-of-message bit. Returns `Ok(None)` on
/// a clean end of stream between messages.
pub async fn read_message<R>(reader: &mut R) -> Result<Option<Message>, ProtocolError>
where
    R: AsyncRead + Unpin,
{
    let mut message: Option<Message> = None;
    loop {
        let mut header = [0u8; HEADER_LEN];
        match reader.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && message.is_none() => {
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        }
        let ty = header[0];
        let status = header[1];
        let length = u16::from_be_bytes([header[2], header[3]]) as usize;
        if length < HEADER_LEN {
            return Err(ProtocolError::malformed(format!(
                "packet length {length} is shorter than its header"
            )));
        }
        let mut payload = vec![0u8; length - HEADER_LEN];
        reader.read_exact(&mut payload).await?;
        let msg = message.get_or_insert_with(|| Message {
            ty,
            status: status & !STATUS_EOM,
            payload: Vec::new(),
        });
        if msg.ty != ty {
            return Err(ProtocolError::malformed(format!(
                "packet type changed from {:#04x} to {ty:#04x} inside one message",
                msg.ty
            )));
        }
        if msg.payload.len() + payload.len() > MAX_MESSAGE_LEN {
            return Err(ProtocolError::malformed("message exceeds 64 MiB"));
        }
        msg.payload.extend_from_slice(&payload);
        if status & STATUS_EOM != 0 {
            return Ok(message);
        }
    }
}

/// Splits `payload` into packets of at most `packet_size` bytes (header
/// included) and returns the bytes to write.
pub fn frame_message(ty: u8, payload: &[u8], packet_size: usize, spid: u16) -> Vec<u8> {
    let packet_size = packet_size.clamp(MIN_PACKET_SIZE, MAX_PACKET_SIZE);
    let chunk = packet_size - HEADER_LEN;
    let chunks: Vec<&[u8]> = if payload.is_empty() {
        vec![&[][..]]
    } else {
        payload.chunks(chunk).collect()
    };
    let mut out = Vec::with_capacity(payload.len() + chunks.len() * HEADER_LEN);
    let count = chunks.len();
    for (i, part) in chunks.into_iter().enumerate() {
        let status = if i + 1 == count { STATUS_EOM } else { 0 };
        // `part.len() + 8 <= 32767`, so the cast cannot truncate.
        let len = (part.len() + HEADER_LEN) as u16;
        out.push(ty);
        out.push(status);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&spid.to_be_bytes());
        out.push(((i + 1) % 256) as u8);
        out.push(0);
        out.extend_from_slice(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_at_packet_size_and_mark_last() {
        let payload = vec![7u8; 1200];
        let bytes = frame_message(packet_type::TABULAR_RESULT, &payload, 512, 51);
        // 504 + 504 + 192 bytes of payload.
        assert_eq!(bytes.len(), 1200 + 3 * HEADER_LEN);
        assert_eq!(bytes[0], 0x04);
        assert_eq!(bytes[1], 0);
        assert_eq!(u16::from_be_bytes([bytes[2], bytes[3]]), 512);
        assert_eq!(u16::from_be_bytes([bytes[4], bytes[5]]), 51);
        let last = 2 * 512;
        assert_eq!(bytes[last + 1], STATUS_EOM);
        assert_eq!(
            u16::from_be_bytes([bytes[last + 2], bytes[last + 3]]) as usize,
            192 + HEADER_LEN
        );
    }

    #[tokio::test]
    async fn reassembles_multi_packet_messages() {
        let payload: Vec<u8> = (0..2000u32).map(|i| (i % 251) as u8).collect();
        let bytes = frame_message(packet_type::SQL_BATCH, &payload, 512, 0);
        let mut reader = &bytes[..];
        let msg = read_message(&mut reader).await.unwrap().unwrap();
        assert_eq!(msg.ty, packet_type::SQL_BATCH);
        assert_eq!(msg.payload, payload);
        assert!(read_message(&mut reader).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn truncated_packet_is_an_error() {
        let bytes = [0x01u8, 0x01, 0x00, 0x20, 0, 0, 1, 0, 1, 2];
        let mut reader = &bytes[..];
        assert!(read_message(&mut reader).await.is_err());
        let bad_len = [0x01u8, 0x01, 0x00, 0x02, 0, 0, 1, 0];
        let mut reader = &bad_len[..];
        assert!(read_message(&mut reader).await.is_err());
    }
}
