//! HTTP/2 frames (RFC 9113 §4 and §6): the 9-octet frame header, the error
//! codes and settings, and the control frames legate writes. Pure byte
//! work; what a frame means to a connection is `h2_conn`'s.

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEADER_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE's initial value, and the largest frame legate
/// accepts (it never raises it).
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;
pub const MAX_MAX_FRAME_SIZE: u32 = 16_777_215;
/// Flow-control windows: the initial 65,535 and the largest 2^31-1.
pub const DEFAULT_WINDOW: u32 = 65_535;
pub const MAX_WINDOW: u32 = (1 << 31) - 1;

pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// SETTINGS identifiers (RFC 9113 §6.5.2, RFC 8441).
pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// An error code (RFC 9113 §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reason(pub u32);

impl Reason {
    pub const NO_ERROR: Reason = Reason(0x0);
    pub const PROTOCOL_ERROR: Reason = Reason(0x1);
    pub const INTERNAL_ERROR: Reason = Reason(0x2);
    pub const FLOW_CONTROL_ERROR: Reason = Reason(0x3);
    pub const STREAM_CLOSED: Reason = Reason(0x5);
    pub const FRAME_SIZE_ERROR: Reason = Reason(0x6);
    pub const REFUSED_STREAM: Reason = Reason(0x7);
    pub const CANCEL: Reason = Reason(0x8);
    pub const COMPRESSION_ERROR: Reason = Reason(0x9);
    pub const ENHANCE_YOUR_CALM: Reason = Reason(0xb);

    pub fn name(self) -> &'static str {
        match self.0 {
            0x0 => "NO_ERROR",
            0x1 => "PROTOCOL_ERROR",
            0x2 => "INTERNAL_ERROR",
            0x3 => "FLOW_CONTROL_ERROR",
            0x4 => "SETTINGS_TIMEOUT",
            0x5 => "STREAM_CLOSED",
            0x6 => "FRAME_SIZE_ERROR",
            0x7 => "REFUSED_STREAM",
            0x8 => "CANCEL",
            0x9 => "COMPRESSION_ERROR",
            0xa => "CONNECT_ERROR",
            0xb => "ENHANCE_YOUR_CALM",
            0xc => "INADEQUATE_SECURITY",
            0xd => "HTTP_1_1_REQUIRED",
            _ => "unknown error code",
        }
    }
}

/// A frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    /// The stream identifier, its reserved bit cleared.
    pub stream: u32,
}

impl Head {
    pub fn parse(b: &[u8]) -> Option<Head> {
        let b: &[u8; HEADER_LEN] = b.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Head {
            len: (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & MAX_WINDOW,
        })
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// The content of a payload with the PADDED flag: the padding length octet
/// and the padding removed. None when the padding is as long as the
/// payload or longer (a PROTOCOL_ERROR, RFC 9113 §6.1).
pub fn unpad(head: &Head, payload: &[u8]) -> Option<std::ops::Range<usize>> {
    if !head.has(flag::PADDED) {
        return Some(0..payload.len());
    }
    let pad = usize::from(*payload.first()?);
    (pad < payload.len()).then(|| 1..payload.len() - pad)
}

pub fn put_head(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len <= MAX_MAX_FRAME_SIZE as usize);
    let l = (len as u32).to_be_bytes();
    let s = stream.to_be_bytes();
    out.extend_from_slice(&[l[1], l[2], l[3], kind, flags, s[0], s[1], s[2], s[3]]);
}

pub fn put_settings(out: &mut Vec<u8>, settings: &[(u16, u32)]) {
    put_head(out, settings.len() * 6, kind::SETTINGS, 0, 0);
    for (id, value) in settings {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }
}

pub fn put_settings_ack(out: &mut Vec<u8>) {
    put_head(out, 0, kind::SETTINGS, flag::ACK, 0);
}

pub fn put_ping_ack(out: &mut Vec<u8>, payload: &[u8; 8]) {
    put_head(out, 8, kind::PING, flag::ACK, 0);
    out.extend_from_slice(payload);
}

pub fn put_window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    put_head(out, 4, kind::WINDOW_UPDATE, 0, stream);
    out.extend_from_slice(&increment.to_be_bytes());
}

pub fn put_rst_stream(out: &mut Vec<u8>, stream: u32, reason: Reason) {
    put_head(out, 4, kind::RST_STREAM, 0, stream);
    out.extend_from_slice(&reason.0.to_be_bytes());
}

pub fn put_goaway(out: &mut Vec<u8>, last_stream: u32, reason: Reason, debug: &[u8]) {
    put_head(out, 8 + debug.len(), kind::GOAWAY, 0, 0);
    out.extend_from_slice(&last_stream.to_be_bytes());
    out.extend_from_slice(&reason.0.to_be_bytes());
    out.extend_from_slice(debug);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_and_write_back() {
        let mut out = Vec::new();
        put_head(
            &mut out,
            0x01_02_03,
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            7,
        );
        assert_eq!(out, [1, 2, 3, 1, 5, 0, 0, 0, 7]);
        assert_eq!(
            Head::parse(&out),
            Some(Head {
                len: 0x01_02_03,
                kind: kind::HEADERS,
                flags: 5,
                stream: 7
            })
        );
        // The reserved bit is ignored on receipt (RFC 9113 §4.1).
        let reserved = [0, 0, 0, 0, 0, 0x80, 0, 0, 3];
        assert_eq!(Head::parse(&reserved).map(|h| h.stream), Some(3));
        assert_eq!(Head::parse(&reserved[..8]), None);
    }

    #[test]
    fn padding_is_removed_or_refused() {
        let padded = Head {
            len: 0,
            kind: kind::DATA,
            flags: flag::PADDED,
            stream: 1,
        };
        let plain = Head { flags: 0, ..padded };
        type Case<'a> = (&'a Head, &'a [u8], Option<std::ops::Range<usize>>);
        let cases: &[Case] = &[
            (&plain, b"abc", Some(0..3)),
            (&padded, &[2, b'a', 0, 0], Some(1..2)),
            (&padded, &[0, b'a'], Some(1..2)),
            (&padded, &[0], Some(1..1)),
            (&padded, &[3, 0, 0, 0], Some(1..1)),
            // Padding as long as the payload: refused.
            (&padded, &[4, b'a', 0, 0], None),
            (&padded, &[], None),
        ];
        for (head, payload, want) in cases {
            assert_eq!(unpad(head, payload), *want, "{payload:?}");
        }
    }

    #[test]
    fn control_frames() {
        let mut out = Vec::new();
        put_settings(&mut out, &[(setting::MAX_CONCURRENT_STREAMS, 100)]);
        assert_eq!(out, [0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]);
        out.clear();
        put_goaway(&mut out, 5, Reason::PROTOCOL_ERROR, b"x");
        assert_eq!(out, [0, 0, 9, 7, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 1, b'x']);
        out.clear();
        put_window_update(&mut out, 3, 1000);
        assert_eq!(out, [0, 0, 4, 8, 0, 0, 0, 0, 3, 0, 0, 3, 0xe8]);
        assert_eq!(Reason(0xd).name(), "HTTP_1_1_REQUIRED");
    }
}
