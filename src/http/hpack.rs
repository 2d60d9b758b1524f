//! HPACK (RFC 7541): the header compression of HTTP/2, for the downstream
//! codec (`h2_server`). Pure: bytes in, fields out, and back.
//!
//! The decoder keeps the dynamic table of already-validated fields, so a
//! field a client sends again by index (after the first request, nearly
//! every field of a typical request) costs a clone, not a parse.
//!
//! The encoder never adds to the peer's dynamic table and does not
//! Huffman-encode: each field is a literal "without indexing", its name by
//! static index where the static table has it. Responses then cost no table
//! state and no per-response lookups beyond the static names, at the price
//! of a larger header block than an indexing encoder would send (tens of
//! bytes per response; Envoy's nghttp2 indexes and Huffman-encodes). It
//! announces a table size of 0 at the start of the first block, so nothing
//! the peer later says about SETTINGS_HEADER_TABLE_SIZE can make its blocks
//! invalid.

use std::collections::VecDeque;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use super::hpack_huffman;

/// The request and response pseudo-header fields (RFC 9113 §8.3, RFC 8441).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pseudo {
    Method,
    Scheme,
    Authority,
    Path,
    Protocol,
    Status,
}

impl Pseudo {
    pub fn name(self) -> &'static str {
        match self {
            Pseudo::Method => ":method",
            Pseudo::Scheme => ":scheme",
            Pseudo::Authority => ":authority",
            Pseudo::Path => ":path",
            Pseudo::Protocol => ":protocol",
            Pseudo::Status => ":status",
        }
    }
}

/// A decoded field, already checked as HTTP/2 requires (lowercase token
/// names, values without control characters; surrounding whitespace
/// trimmed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    Pseudo(Pseudo, Bytes),
    Header(HeaderName, HeaderValue),
}

impl Field {
    /// The size the dynamic table and header list limits count (§4.1).
    pub fn size(&self) -> usize {
        32 + self.name_len()
            + match self {
                Field::Pseudo(_, v) => v.len(),
                Field::Header(_, v) => v.len(),
            }
    }

    fn name_len(&self) -> usize {
        match self {
            Field::Pseudo(p, _) => p.name().len(),
            Field::Header(n, _) => n.as_str().len(),
        }
    }

    fn with_value(&self, value: Bytes) -> Result<Field, DecodeError> {
        match self {
            Field::Pseudo(p, _) => Ok(Field::Pseudo(*p, value)),
            Field::Header(n, _) => Ok(Field::Header(n.clone(), header_value(value)?)),
        }
    }
}

/// Why a header block was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The block breaks HPACK itself (a bad index, integer or string): the
    /// decoder's state is lost, a connection error (COMPRESSION_ERROR).
    Compression(&'static str),
    /// A field HTTP/2 does not allow: the request is malformed.
    Malformed(&'static str),
}

/// RFC 7541 Appendix A. `const`: a field from it is cloned, never built.
static STATIC_TABLE: [Field; 61] = {
    const fn h(name: &'static str, value: &'static str) -> Field {
        Field::Header(HeaderName::from_static(name), HeaderValue::from_static(value))
    }
    const fn p(p: Pseudo, value: &'static str) -> Field {
        Field::Pseudo(p, Bytes::from_static(value.as_bytes()))
    }
    [
        p(Pseudo::Authority, ""),
        p(Pseudo::Method, "GET"),
        p(Pseudo::Method, "POST"),
        p(Pseudo::Path, "/"),
        p(Pseudo::Path, "/index.html"),
        p(Pseudo::Scheme, "http"),
        p(Pseudo::Scheme, "https"),
        p(Pseudo::Status, "200"),
        p(Pseudo::Status, "204"),
        p(Pseudo::Status, "206"),
        p(Pseudo::Status, "304"),
        p(Pseudo::Status, "400"),
        p(Pseudo::Status, "404"),
        p(Pseudo::Status, "500"),
        h("accept-charset", ""),
        h("accept-encoding", "gzip, deflate"),
        h("accept-language", ""),
        h("accept-ranges", ""),
        h("accept", ""),
        h("access-control-allow-origin", ""),
        h("age", ""),
        h("allow", ""),
        h("authorization", ""),
        h("cache-control", ""),
        h("content-disposition", ""),
        h("content-encoding", ""),
        h("content-language", ""),
        h("content-length", ""),
        h("content-location", ""),
        h("content-range", ""),
        h("content-type", ""),
        h("cookie", ""),
        h("date", ""),
        h("etag", ""),
        h("expect", ""),
        h("expires", ""),
        h("from", ""),
        h("host", ""),
        h("if-match", ""),
        h("if-modified-since", ""),
        h("if-none-match", ""),
        h("if-range", ""),
        h("if-unmodified-since", ""),
        h("last-modified", ""),
        h("link", ""),
        h("location", ""),
        h("max-forwards", ""),
        h("proxy-authenticate", ""),
        h("proxy-authorization", ""),
        h("range", ""),
        h("referer", ""),
        h("refresh", ""),
        h("retry-after", ""),
        h("server", ""),
        h("set-cookie", ""),
        h("strict-transport-security", ""),
        h("transfer-encoding", ""),
        h("user-agent", ""),
        h("vary", ""),
        h("via", ""),
        h("www-authenticate", ""),
    ]
};

/// The decoder's half of a connection's HPACK state.
pub struct Decoder {
    /// Newest first: index 62 is `table[0]`.
    /// Newest first, each with its size as the encoder counts it: from
    /// the value as sent, before legate trimmed its whitespace.
    table: VecDeque<(Field, usize)>,
    size: usize,
    /// The table's current limit (set by the encoder's size updates).
    max_size: usize,
    /// What SETTINGS_HEADER_TABLE_SIZE allows the encoder (legate's own
    /// setting; 4096, the protocol default, unless configured).
    allowed: usize,
}

/// The largest integer accepted (a size, an index or a length): far beyond
/// any legitimate one, well inside `usize`.
const MAX_INT: usize = 1 << 24;

impl Decoder {
    pub fn new(table_size: usize) -> Decoder {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            max_size: table_size,
            allowed: table_size,
        }
    }

    /// Decodes one whole header block, handing each field to `emit` in
    /// order. An error from `emit` stops decoding and is returned.
    pub fn decode(
        &mut self,
        block: &[u8],
        mut emit: impl FnMut(Field) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        let mut at = 0;
        let mut fields = 0usize;
        while at < block.len() {
            let b = block[at];
            if b & 0x80 != 0 {
                // Indexed field (§6.1).
                let index = integer(block, &mut at, 7)?;
                emit(self.get(index)?.clone())?;
            } else if b & 0x40 != 0 {
                // Literal with incremental indexing (§6.2.1).
                let (field, size) = self.literal(block, &mut at, 6)?;
                self.insert(field.clone(), size);
                emit(field)?;
            } else if b & 0x20 != 0 {
                // Dynamic table size update (§6.3): only before the first
                // field of a block.
                if fields > 0 {
                    return Err(DecodeError::Compression("table size update after a field"));
                }
                let size = integer(block, &mut at, 5)?;
                if size > self.allowed {
                    return Err(DecodeError::Compression("table size update above the setting"));
                }
                self.max_size = size;
                self.evict(0);
                continue;
            } else {
                // Literal without indexing (0000) or never indexed (0001)
                // (§6.2.2, §6.2.3): the same to a decoder.
                let (field, _) = self.literal(block, &mut at, 4)?;
                emit(field)?;
            }
            fields += 1;
        }
        Ok(())
    }

    fn get(&self, index: usize) -> Result<&Field, DecodeError> {
        match index {
            0 => Err(DecodeError::Compression("index 0")),
            1..=61 => Ok(&STATIC_TABLE[index - 1]),
            _ => self
                .table
                .get(index - 62)
                .map(|(f, _)| f)
                .ok_or(DecodeError::Compression("index beyond the dynamic table")),
        }
    }

    /// A literal field whose first octet has a `prefix`-bit name index,
    /// and its size in the dynamic table (§4.1).
    fn literal(&self, block: &[u8], at: &mut usize, prefix: u8) -> Result<(Field, usize), DecodeError> {
        let index = integer(block, at, prefix)?;
        if index == 0 {
            let name = string(block, at)?;
            let value = string(block, at)?;
            let size = 32 + name.len() + value.len();
            Ok((field(&name, value)?, size))
        } else {
            // Resolve the name before reading on: the index is checked
            // whatever the value.
            let named = self.get(index)?;
            let value = string(block, at)?;
            let size = 32 + named.name_len() + value.len();
            Ok((named.with_value(value)?, size))
        }
    }

    fn insert(&mut self, field: Field, size: usize) {
        if size > self.max_size {
            // Larger than the whole table: it empties the table (§4.4).
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict(size);
        self.size += size;
        self.table.push_front((field, size));
    }

    /// Evicts the oldest entries until `room` more fits.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max_size {
            match self.table.pop_back() {
                Some((_, size)) => self.size -= size,
                None => break,
            }
        }
    }

    #[cfg(test)]
    fn entries(&self) -> Vec<(String, String)> {
        self.table.iter().map(|(f, _)| text(f)).collect()
    }
}

#[cfg(test)]
fn text(f: &Field) -> (String, String) {
    match f {
        Field::Pseudo(p, v) => (p.name().into(), String::from_utf8_lossy(v).into()),
        Field::Header(n, v) => (n.as_str().into(), String::from_utf8_lossy(v.as_bytes()).into()),
    }
}

/// An integer with a `prefix`-bit prefix (§5.1) at `block[*at]`.
fn integer(block: &[u8], at: &mut usize, prefix: u8) -> Result<usize, DecodeError> {
    let max_prefix = (1usize << prefix) - 1;
    let first = *block
        .get(*at)
        .ok_or(DecodeError::Compression("truncated integer"))?;
    *at += 1;
    let mut value = usize::from(first) & max_prefix;
    if value < max_prefix {
        return Ok(value);
    }
    let mut shift = 0;
    loop {
        let b = *block
            .get(*at)
            .ok_or(DecodeError::Compression("truncated integer"))?;
        *at += 1;
        // 28 bits of continuation hold any accepted value; more (even
        // zero bits) is an overlong encoding.
        if shift > 21 {
            return Err(DecodeError::Compression("integer too large"));
        }
        value += usize::from(b & 0x7f) << shift;
        if value > MAX_INT {
            return Err(DecodeError::Compression("integer too large"));
        }
        if b & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
    }
}

/// A string literal (§5.2), Huffman-decoded when it says so.
fn string(block: &[u8], at: &mut usize) -> Result<Bytes, DecodeError> {
    let huffman = block
        .get(*at)
        .ok_or(DecodeError::Compression("truncated string"))?
        & 0x80
        != 0;
    let len = integer(block, at, 7)?;
    let end = at
        .checked_add(len)
        .filter(|e| *e <= block.len())
        .ok_or(DecodeError::Compression("string beyond the block"))?;
    let raw = &block[*at..end];
    *at = end;
    if huffman {
        let mut out = Vec::new();
        hpack_huffman::decode(raw, &mut out).map_err(|_| DecodeError::Compression("bad Huffman string"))?;
        Ok(Bytes::from(out))
    } else {
        Ok(Bytes::copy_from_slice(raw))
    }
}

/// A field from a literal name and value, checked.
fn field(name: &[u8], value: Bytes) -> Result<Field, DecodeError> {
    if let Some(pseudo) = name.strip_prefix(b":") {
        let p = match pseudo {
            b"method" => Pseudo::Method,
            b"scheme" => Pseudo::Scheme,
            b"authority" => Pseudo::Authority,
            b"path" => Pseudo::Path,
            b"protocol" => Pseudo::Protocol,
            b"status" => Pseudo::Status,
            _ => return Err(DecodeError::Malformed("unknown pseudo-header field")),
        };
        return Ok(Field::Pseudo(p, value));
    }
    // RFC 9113 §8.2.1: names are lowercase (HeaderName would fold them).
    if name.iter().any(u8::is_ascii_uppercase) {
        return Err(DecodeError::Malformed("uppercase field name"));
    }
    let name = HeaderName::from_bytes(name).map_err(|_| DecodeError::Malformed("invalid field name"))?;
    Ok(Field::Header(name, header_value(value)?))
}

/// RFC 9113 §8.2.1: no NUL, CR or LF (nor other controls, as HTTP/1
/// fields). Whitespace at either end, which the RFC does not allow either,
/// is trimmed instead, as an HTTP/1.1 parser does: HTTP/2 clients have
/// sent it, and hyper's codec, which served HTTP/2 before, let it through.
fn header_value(mut value: Bytes) -> Result<HeaderValue, DecodeError> {
    let blank = |b: &&u8| matches!(b, b' ' | b'\t');
    let start = value.iter().take_while(blank).count();
    let end = value.len() - value[start..].iter().rev().take_while(blank).count();
    if start > 0 || end < value.len() {
        value = value.slice(start..end);
    }
    HeaderValue::from_maybe_shared(value).map_err(|_| DecodeError::Malformed("invalid field value"))
}

/// The encoder's half: see the module comment for what it sends.
#[derive(Default)]
pub struct Encoder {
    announced_size: bool,
}

impl Encoder {
    /// Starts a header block: the first one says the table is empty.
    pub fn start_block(&mut self, out: &mut Vec<u8>) {
        if !self.announced_size {
            self.announced_size = true;
            // Dynamic table size update to 0 (§6.3).
            out.push(0x20);
        }
    }

    /// `:status`, indexed when the static table has the code.
    pub fn status(&self, out: &mut Vec<u8>, code: u16) {
        let index = match code {
            200 => 8,
            204 => 9,
            206 => 10,
            304 => 11,
            400 => 12,
            404 => 13,
            500 => 14,
            _ => 0,
        };
        if index != 0 {
            out.push(0x80 | index);
            return;
        }
        // Literal without indexing, name :status (index 8).
        out.push(0x08);
        out.push(3);
        let c = code.min(999);
        out.extend_from_slice(&[
            b'0' + (c / 100) as u8,
            b'0' + (c / 10 % 10) as u8,
            b'0' + (c % 10) as u8,
        ]);
    }

    /// A field, as a literal not added to the table: "never indexed" when
    /// the value is marked sensitive, so intermediaries keep it literal too.
    pub fn field(&self, out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
        self.field_bytes(out, name, value.as_bytes(), value.is_sensitive());
    }

    pub fn field_bytes(&self, out: &mut Vec<u8>, name: &HeaderName, value: &[u8], sensitive: bool) {
        let first = if sensitive { 0x10 } else { 0x00 };
        match static_name_index(name.as_str()) {
            Some(i) => put_integer(out, first, 4, usize::from(i)),
            None => {
                out.push(first);
                put_string(out, name.as_str().as_bytes());
            }
        }
        put_string(out, value);
    }
}

fn put_integer(out: &mut Vec<u8>, first: u8, prefix: u8, mut value: usize) {
    let max_prefix = (1usize << prefix) - 1;
    if value < max_prefix {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max_prefix as u8);
    value -= max_prefix;
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A string literal, not Huffman-encoded.
fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    put_integer(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

/// The static table's index for a field name (its first entry).
fn static_name_index(name: &str) -> Option<u8> {
    // By length first: a handful of names to compare at most.
    let i = match name.len() {
        3 => match name {
            "age" => 21,
            "via" => 60,
            _ => return None,
        },
        4 => match name {
            "date" => 33,
            "etag" => 34,
            "from" => 37,
            "host" => 38,
            "link" => 45,
            "vary" => 59,
            _ => return None,
        },
        5 => match name {
            "allow" => 22,
            "range" => 50,
            _ => return None,
        },
        6 => match name {
            "accept" => 19,
            "cookie" => 32,
            "expect" => 35,
            "server" => 54,
            _ => return None,
        },
        7 => match name {
            "expires" => 36,
            "referer" => 51,
            "refresh" => 52,
            _ => return None,
        },
        8 => match name {
            "if-match" => 39,
            "if-range" => 42,
            "location" => 46,
            _ => return None,
        },
        10 => match name {
            "set-cookie" => 55,
            "user-agent" => 58,
            _ => return None,
        },
        11 => match name {
            "retry-after" => 53,
            _ => return None,
        },
        12 => match name {
            "content-type" => 31,
            "max-forwards" => 47,
            _ => return None,
        },
        13 => match name {
            "accept-ranges" => 18,
            "authorization" => 23,
            "cache-control" => 24,
            "content-range" => 30,
            "if-none-match" => 41,
            "last-modified" => 44,
            _ => return None,
        },
        14 => match name {
            "accept-charset" => 15,
            "content-length" => 28,
            _ => return None,
        },
        15 => match name {
            "accept-encoding" => 16,
            "accept-language" => 17,
            _ => return None,
        },
        16 => match name {
            "content-encoding" => 26,
            "content-language" => 27,
            "content-location" => 29,
            "www-authenticate" => 61,
            _ => return None,
        },
        17 => match name {
            "if-modified-since" => 40,
            "transfer-encoding" => 57,
            _ => return None,
        },
        18 => match name {
            "proxy-authenticate" => 48,
            _ => return None,
        },
        19 => match name {
            "content-disposition" => 25,
            "if-unmodified-since" => 43,
            "proxy-authorization" => 49,
            _ => return None,
        },
        25 => match name {
            "strict-transport-security" => 56,
            _ => return None,
        },
        27 => match name {
            "access-control-allow-origin" => 20,
            _ => return None,
        },
        _ => return None,
    };
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::super::hpack_huffman::tests::hex;
    use super::*;

    fn decode(d: &mut Decoder, block: &[u8]) -> Result<Vec<(String, String)>, DecodeError> {
        let mut got = Vec::new();
        d.decode(block, |f| {
            got.push(text(&f));
            Ok(())
        })?;
        Ok(got)
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    /// RFC 7541 Appendix C.3 (requests without Huffman) and C.4 (with):
    /// three requests on one connection, the dynamic table after each.
    #[test]
    fn rfc_7541_request_examples() {
        for blocks in [
            [
                "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                "8286 84be 5808 6e6f 2d63 6163 6865",
                "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
            ],
            [
                "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                "8286 84be 5886 a8eb 1064 9cbf",
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
            ],
        ] {
            let mut d = Decoder::new(4096);
            let got = decode(&mut d, &hex(blocks[0])).unwrap();
            assert_eq!(
                got,
                pairs(&[
                    (":method", "GET"),
                    (":scheme", "http"),
                    (":path", "/"),
                    (":authority", "www.example.com")
                ])
            );
            assert_eq!(d.entries(), pairs(&[(":authority", "www.example.com")]));
            assert_eq!(d.size, 57);
            let got = decode(&mut d, &hex(blocks[1])).unwrap();
            assert_eq!(got[3], (":authority".into(), "www.example.com".into()));
            assert_eq!(got[4], ("cache-control".into(), "no-cache".into()));
            assert_eq!(d.size, 110);
            let got = decode(&mut d, &hex(blocks[2])).unwrap();
            assert_eq!(
                got,
                pairs(&[
                    (":method", "GET"),
                    (":scheme", "https"),
                    (":path", "/index.html"),
                    (":authority", "www.example.com"),
                    ("custom-key", "custom-value")
                ])
            );
            assert_eq!(
                d.entries(),
                pairs(&[
                    ("custom-key", "custom-value"),
                    ("cache-control", "no-cache"),
                    (":authority", "www.example.com")
                ])
            );
            assert_eq!(d.size, 164);
        }
    }

    /// RFC 7541 Appendix C.5: responses with a 256-byte table, so entries
    /// are evicted.
    #[test]
    fn rfc_7541_response_examples_evict() {
        let mut d = Decoder::new(256);
        let first = hex(
            "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        );
        let got = decode(&mut d, &first).unwrap();
        assert_eq!(got[0], (":status".into(), "302".into()));
        assert_eq!(d.size, 222);
        let got = decode(&mut d, &hex("4803 3330 37c1 c0bf")).unwrap();
        assert_eq!(
            got,
            pairs(&[
                (":status", "307"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("location", "https://www.example.com")
            ])
        );
        // ":status: 302" was evicted to make room for ":status: 307".
        assert_eq!(d.entries()[0], (":status".into(), "307".into()));
        assert_eq!(d.size, 222);
        let third = hex(
            "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31",
        );
        let got = decode(&mut d, &third).unwrap();
        assert_eq!(got.len(), 6);
        assert_eq!(
            got[5],
            (
                "set-cookie".into(),
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1".into()
            )
        );
        assert_eq!(d.size, 215);
        assert_eq!(d.entries().len(), 3);
    }

    #[test]
    fn bad_blocks_are_refused() {
        let compression = |what| Err(DecodeError::Compression(what));
        let malformed = |what| Err(DecodeError::Malformed(what));
        let cases: &[(&str, Result<(), DecodeError>)] = &[
            ("80", compression("index 0")),
            ("be", compression("index beyond the dynamic table")),
            ("ff", compression("truncated integer")),
            ("ff ff ff ff ff 7f", compression("integer too large")),
            ("40 05 61", compression("string beyond the block")),
            ("40 81 00 00", compression("bad Huffman string")),
            // A size update above the 4096 setting, and one after a field.
            ("3f e2 1f", compression("table size update above the setting")),
            ("82 20", compression("table size update after a field")),
            // Field rules (RFC 9113 §8.2.1).
            ("00 01 41 01 62", malformed("uppercase field name")),
            ("00 02 61 20 01 62", malformed("invalid field name")),
            ("00 02 3a 78 01 62", malformed("unknown pseudo-header field")),
            ("00 01 61 02 62 0a", malformed("invalid field value")),
            // Ten continuation octets adding nothing: overlong, refused
            // (not a shift overflow).
            (
                "ff 80 80 80 80 80 80 80 80 80 80 00",
                compression("integer too large"),
            ),
            // Fine: a size update first, obs-text in a value, an empty value.
            ("20 00 01 61 01 ff", Ok(())),
            ("00 01 61 00", Ok(())),
        ];
        for (block, want) in cases {
            let mut d = Decoder::new(4096);
            let got = d.decode(&hex(block), |_| Ok(()));
            assert_eq!(&got, want, "{block}");
        }
    }

    #[test]
    fn whitespace_around_values_is_trimmed() {
        let mut d = Decoder::new(4096);
        let got = decode(
            &mut d,
            &hex("00 01 61 04 20 62 20 09 40 01 63 03 09 64 20 00 01 65 02 20 20"),
        )
        .unwrap();
        assert_eq!(got, pairs(&[("a", "b"), ("c", "d"), ("e", "")]));
        assert_eq!(d.entries(), pairs(&[("c", "d")]), "indexed trimmed");
    }

    /// An entry takes the room of the value as sent (§4.1), whitespace
    /// and all, so legate evicts exactly when the client's encoder does.
    #[test]
    fn an_entry_is_counted_as_sent_before_trimming() {
        let mut d = Decoder::new(4096);
        // Table of 69 bytes; a: " b " takes 36 (34 trimmed), c: d 34.
        decode(&mut d, &hex("3f 26 40 01 61 03 20 62 20 40 01 63 01 64")).unwrap();
        assert_eq!(d.entries(), pairs(&[("c", "d")]), "a evicted");
        assert_eq!(d.size, 34);
    }

    #[test]
    fn a_size_update_evicts_and_a_field_larger_than_the_table_empties_it() {
        let mut d = Decoder::new(4096);
        decode(&mut d, &hex("40 01 61 01 62 40 01 63 01 64")).unwrap();
        assert_eq!(d.entries().len(), 2);
        // Shrink to 34 bytes: one 34-byte entry fits.
        decode(&mut d, &hex("3f 03")).unwrap();
        assert_eq!(d.entries(), pairs(&[("c", "d")]));
        // A 35-byte entry is larger than the table: it is not added, and
        // the table is empty.
        decode(&mut d, &hex("40 01 65 02 66 66")).unwrap();
        assert!(d.entries().is_empty());
        assert_eq!(d.size, 0);
    }

    /// What the encoder writes decodes back to the same fields.
    #[test]
    fn encoded_fields_decode_back() {
        let mut e = Encoder::default();
        let mut out = Vec::new();
        e.start_block(&mut out);
        for code in [200, 302, 404, 503] {
            e.status(&mut out, code);
        }
        let long = "x".repeat(300);
        let fields = [
            ("content-type", "text/plain"),
            ("x-envoy-upstream-service-time", "3"),
            ("www-authenticate", "Basic"),
            ("x-long", long.as_str()),
            ("server", ""),
        ];
        for (n, v) in fields {
            e.field(
                &mut out,
                &HeaderName::from_static(n),
                &HeaderValue::from_str(v).unwrap(),
            );
        }
        let mut secret = HeaderValue::from_static("token");
        secret.set_sensitive(true);
        e.field(&mut out, &http::header::AUTHORIZATION, &secret);
        let mut again = Vec::new();
        e.start_block(&mut again);
        assert!(again.is_empty(), "the size update goes in the first block only");

        let mut d = Decoder::new(4096);
        let got = decode(&mut d, &out).unwrap();
        let mut want = pairs(&[
            (":status", "200"),
            (":status", "302"),
            (":status", "404"),
            (":status", "503"),
        ]);
        want.extend(pairs(&fields));
        want.push(("authorization".into(), "token".into()));
        assert_eq!(got, want);
        assert!(d.entries().is_empty(), "nothing was indexed");
        assert_eq!(d.max_size, 0, "the first block set the table size to 0");
        // The sensitive field went out never-indexed (0001 prefix), by name index.
        assert_eq!(out[out.len() - 8..out.len() - 5], [0x10 | 15, 23 - 15, 5]);
    }

    #[test]
    fn every_static_name_is_found() {
        for (i, f) in STATIC_TABLE.iter().enumerate() {
            if let Field::Header(n, _) = f {
                // accept-encoding's first entry is 16 (with a value), the
                // only name whose static entry has one.
                assert_eq!(static_name_index(n.as_str()), Some(i as u8 + 1), "{n}");
            }
        }
        assert_eq!(static_name_index("x-custom"), None);
    }
}
