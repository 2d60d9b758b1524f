//! HPACK's Huffman code (RFC 7541 §5.2, Appendix B), decoding only: legate
//! sends its header fields as plain literals, and decodes whatever a client
//! Huffman-encodes (most do, for new values).
//!
//! The code is canonical: ordered by (length, symbol), each code is the
//! previous one plus one, shifted left by the growth in length. So the 257
//! code lengths of Appendix B determine every code, and a decoder needs only
//! the first code and the symbols of each length. A 9-bit lookup table
//! resolves the short codes (every letter, digit and common punctuation) in
//! one step; longer ones are found length by length.

/// The length in bits of each symbol's code: 0..=255 are the octets, 256 is
/// EOS (RFC 7541 Appendix B).
const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, //
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, //
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, //
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, //
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, //
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, //
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, //
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, //
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, //
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, //
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, //
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, //
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, //
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, //
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, //
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, //
    30,
];

const EOS: u16 = 256;
const MIN_LEN: usize = 5;
const MAX_LEN: usize = 30;
/// Bits resolved by one table lookup.
const FAST_BITS: u32 = 9;

/// The canonical code's tables.
struct Code {
    /// Symbols ordered by (code length, symbol).
    sorted: [u16; 257],
    /// Per length: the first code of that length (left-aligned to the
    /// length), the number of codes, and where they start in `sorted`.
    first: [u32; MAX_LEN + 1],
    count: [u16; MAX_LEN + 1],
    offset: [u16; MAX_LEN + 1],
    /// The next `FAST_BITS` bits → `len << 9 | symbol` of a code no longer
    /// than `FAST_BITS`, or 0.
    fast: [u16; 1 << FAST_BITS],
}

const fn build() -> Code {
    let mut count = [0u16; MAX_LEN + 1];
    let mut s = 0;
    while s < 257 {
        count[LENGTHS[s] as usize] += 1;
        s += 1;
    }
    let mut offset = [0u16; MAX_LEN + 1];
    let mut first = [0u32; MAX_LEN + 1];
    let mut code = 0u32;
    let mut at = 0u16;
    let mut len = 1;
    while len <= MAX_LEN {
        first[len] = code;
        offset[len] = at;
        at += count[len];
        code = (code + count[len] as u32) << 1;
        len += 1;
    }
    let mut sorted = [0u16; 257];
    let mut next = offset;
    let mut s = 0;
    while s < 257 {
        let l = LENGTHS[s] as usize;
        sorted[next[l] as usize] = s as u16;
        next[l] += 1;
        s += 1;
    }
    let mut fast = [0u16; 1 << FAST_BITS];
    let mut len = MIN_LEN;
    while len <= FAST_BITS as usize {
        let mut i = 0;
        while i < count[len] as usize {
            let sym = sorted[offset[len] as usize + i];
            let c = first[len] + i as u32;
            // Every FAST_BITS-bit value that starts with this code.
            let spare = FAST_BITS as usize - len;
            let base = (c << spare) as usize;
            let mut k = 0;
            while k < (1 << spare) {
                fast[base + k] = ((len as u16) << 9) | sym;
                k += 1;
            }
            i += 1;
        }
        len += 1;
    }
    Code {
        sorted,
        first,
        count,
        offset,
        fast,
    }
}

static CODE: Code = build();

/// Why a Huffman string could not be decoded (a COMPRESSION_ERROR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HuffmanError {
    /// The EOS symbol inside the string (RFC 7541 §5.2).
    Eos,
    /// Padding longer than 7 bits, or not the most significant bits of EOS.
    Padding,
}

/// Decodes `src`, appending the octets to `out`.
pub fn decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    let code = &CODE;
    // Bits not consumed yet, left-aligned in `acc`'s low `bits` bits.
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    let mut input = src.iter();
    out.reserve(src.len() * 8 / 5);
    loop {
        while bits <= 56 {
            match input.next() {
                Some(b) => {
                    acc = (acc << 8) | u64::from(*b);
                    bits += 8;
                }
                None => break,
            }
        }
        if bits == 0 {
            return Ok(());
        }
        // The next bits, padded with ones as EOS's prefix would be.
        let peek = |n: u32| -> u32 {
            if bits >= n {
                ((acc >> (bits - n)) & ((1 << n) - 1)) as u32
            } else {
                (((acc << (n - bits)) | ((1 << (n - bits)) - 1)) & ((1 << n) - 1)) as u32
            }
        };
        let hit = code.fast[peek(FAST_BITS) as usize];
        let (len, sym) = if hit != 0 {
            (u32::from(hit >> 9), hit & 0x1ff)
        } else {
            let mut found = None;
            let mut len = FAST_BITS as usize + 1;
            while len <= MAX_LEN {
                let v = peek(len as u32);
                let c = v - code.first[len].min(v);
                if v >= code.first[len] && c < u32::from(code.count[len]) {
                    found = Some((len as u32, code.sorted[code.offset[len] as usize + c as usize]));
                    break;
                }
                len += 1;
            }
            // A complete code is always found: 30 ones is EOS.
            found.ok_or(HuffmanError::Padding)?
        };
        if len > bits {
            // The code runs past the end: what is left is padding, which
            // must be fewer than 8 bits, all ones (EOS's prefix).
            let all_ones = acc & ((1 << bits) - 1) == (1 << bits) - 1;
            return if bits < 8 && all_ones {
                Ok(())
            } else {
                Err(HuffmanError::Padding)
            };
        }
        if sym == EOS {
            return Err(HuffmanError::Eos);
        }
        out.push(sym as u8);
        bits -= len;
        acc &= (1u64 << bits).wrapping_sub(1);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Octets from hex digits (spaces allowed), as RFC 7541 prints them.
    pub(crate) fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn decoded(s: &str) -> Result<String, HuffmanError> {
        let mut out = Vec::new();
        decode(&hex(s), &mut out).map(|()| String::from_utf8(out).unwrap())
    }

    /// The codes the lengths imply are Appendix B's (a few spot checks:
    /// the shortest, a 6-, 8- and 13-bit one, and EOS).
    #[test]
    fn canonical_codes_are_the_rfc_table() {
        let code_of = |sym: u16| -> (u32, usize) {
            let len = LENGTHS[sym as usize] as usize;
            let pos = (code_of_pos(sym, len)) as u32;
            (CODE.first[len] + pos, len)
        };
        fn code_of_pos(sym: u16, len: usize) -> usize {
            let start = CODE.offset[len] as usize;
            CODE.sorted[start..start + CODE.count[len] as usize]
                .iter()
                .position(|s| *s == sym)
                .unwrap()
        }
        assert_eq!(code_of(b'0' as u16), (0x0, 5));
        assert_eq!(code_of(b't' as u16), (0x9, 5));
        assert_eq!(code_of(b' ' as u16), (0x14, 6));
        assert_eq!(code_of(b'&' as u16), (0xf8, 8));
        assert_eq!(code_of(0), (0x1ff8, 13));
        assert_eq!(code_of(255), (0x3ffffee, 26));
        assert_eq!(code_of(EOS), (0x3fffffff, 30));
    }

    /// RFC 7541 Appendix C.4 and C.6 strings.
    #[test]
    fn rfc_7541_examples() {
        let cases = [
            ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"),
            ("a8eb 1064 9cbf", "no-cache"),
            ("25a8 49e9 5ba9 7d7f", "custom-key"),
            ("25a8 49e9 5bb8 e8b4 bf", "custom-value"),
            ("6402", "302"),
            ("aec3 771a 4b", "private"),
            (
                "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
                "Mon, 21 Oct 2013 20:13:21 GMT",
            ),
            ("9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3", "https://www.example.com"),
            ("640e ff", "307"),
            ("9bd9 ab", "gzip"),
            (
                "94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
            ),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(decoded(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn padding_and_eos_are_checked() {
        let cases = [
            // 'a' (00011) then 3 one bits: fine.
            ("1f", Ok("a")),
            // 'a' then padding with a zero bit: not EOS's prefix.
            ("1e", Err(HuffmanError::Padding)),
            // Eight bits of padding after a whole symbol: too long.
            ("1fff", Err(HuffmanError::Padding)),
            // EOS itself (30 ones), encoded in the string.
            ("ffff fffc", Err(HuffmanError::Eos)),
            // A lone byte of ones: 8 bits of padding.
            ("ff", Err(HuffmanError::Padding)),
            // Two 13-bit NULs (0x1ff8) and 6 bits of ones padding.
            ("ffc7 fe3f", Ok("\0\0")),
        ];
        for (input, want) in cases {
            assert_eq!(decoded(input).as_deref().map_err(|e| *e), want, "{input}");
        }
    }

    /// Every octet round-trips through an encoder written from the
    /// canonical tables (test-only: legate does not Huffman-encode).
    #[test]
    fn every_octet_decodes() {
        let mut bits: Vec<bool> = Vec::new();
        let input: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        for &b in &input {
            let len = LENGTHS[b as usize] as usize;
            let start = CODE.offset[len] as usize;
            let pos = CODE.sorted[start..start + CODE.count[len] as usize]
                .iter()
                .position(|s| *s == u16::from(b))
                .unwrap();
            let code = CODE.first[len] + pos as u32;
            for i in (0..len).rev() {
                bits.push(code >> i & 1 == 1);
            }
        }
        while !bits.len().is_multiple_of(8) {
            bits.push(true);
        }
        let bytes: Vec<u8> = bits
            .chunks(8)
            .map(|c| c.iter().fold(0u8, |acc, b| acc << 1 | u8::from(*b)))
            .collect();
        let mut out = Vec::new();
        decode(&bytes, &mut out).unwrap();
        assert_eq!(out, input);
    }
}
