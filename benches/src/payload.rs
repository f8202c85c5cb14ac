//! The 64-byte payload every measurement writes and its receiver checks.
//!
//! A binary payload ([`make`] / [`check`]) is eight little-endian words: the sequence
//! number, a tag telling ping from pong (and producers apart), five words derived from
//! both, and a checksum of the first seven. The receiver recomputes the checksum and
//! compares the sequence number, so a torn, stale or misrouted payload is caught, not
//! timed. A text payload ([`make_text`] / [`check_text`]) carries the same guarantees in
//! 64 printable ASCII bytes, for stores whose fields are strings (a node's description,
//! a Redis hash field, an SQLite column).

/// Payload size in bytes.
pub const LEN: usize = 64;

/// A payload.
pub type Payload = [u8; LEN];

/// Tag of payloads sent by the measuring process.
pub const PING: u64 = 0x5049_4e47;
/// Tag of payloads sent back by the other process.
pub const PONG: u64 = 0x504f_4e47;

/// SplitMix64 finaliser: a cheap, well-mixed function of one word.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Checksum of words: a multiply-rotate chain, order-sensitive.
fn checksum(words: &[u64]) -> u64 {
    words.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, w| (h ^ w).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29))
}

/// The payload for sequence `seq` with tag `tag`.
pub fn make(seq: u64, tag: u64) -> Payload {
    let mut w = [0u64; 8];
    w[0] = seq;
    w[1] = tag;
    for (j, x) in w[2..7].iter_mut().enumerate() {
        *x = mix(seq ^ tag.rotate_left(17) ^ j as u64);
    }
    w[7] = checksum(&w[..7]);
    from_words(&w)
}

/// Checks a received payload: length, checksum, sequence number and tag.
pub fn check(p: &[u8], seq: u64, tag: u64) -> Result<(), String> {
    let w = words_of(p)?;
    if checksum(&w[..7]) != w[7] {
        return Err(format!("payload checksum mismatch at sequence {seq}"));
    }
    if w[0] != seq || w[1] != tag {
        return Err(format!("expected payload seq {seq} tag {tag:#x}, got seq {} tag {:#x}", w[0], w[1]));
    }
    Ok(())
}

/// Checks a payload's checksum and returns its (sequence, tag), for receivers that do not
/// know the next sequence number (several producers).
pub fn decode(p: &[u8]) -> Result<(u64, u64), String> {
    let w = words_of(p)?;
    if checksum(&w[..7]) != w[7] {
        return Err("payload checksum mismatch".to_string());
    }
    Ok((w[0], w[1]))
}

fn words_of(p: &[u8]) -> Result<[u64; 8], String> {
    if p.len() != LEN {
        return Err(format!("payload is {} bytes, expected {LEN}", p.len()));
    }
    let mut w = [0u64; 8];
    for (x, c) in w.iter_mut().zip(p.chunks_exact(8)) {
        *x = u64::from_le_bytes(c.try_into().expect("chunks of 8"));
    }
    Ok(w)
}

/// The payload as eight words (for copying through atomic words in shared memory).
pub fn to_words(p: &Payload) -> [u64; 8] {
    words_of(p).expect("a Payload is 64 bytes")
}

/// The payload from eight words.
pub fn from_words(w: &[u64; 8]) -> Payload {
    let mut p = [0u8; LEN];
    for (c, x) in p.chunks_exact_mut(8).zip(w) {
        c.copy_from_slice(&x.to_le_bytes());
    }
    p
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn put_hex(out: &mut [u8], v: u64) {
    for (i, c) in out.iter_mut().enumerate() {
        *c = HEX[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

fn get_hex(s: &[u8]) -> Option<u64> {
    s.iter().try_fold(0u64, |acc, c| {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | d as u64)
    })
}

/// Checksum of the first 48 bytes of a text payload.
fn text_sum(p: &[u8]) -> u64 {
    let mut w = [0u64; 6];
    for (x, c) in w.iter_mut().zip(p[..48].chunks_exact(8)) {
        *x = u64::from_le_bytes(c.try_into().expect("chunks of 8"));
    }
    checksum(&w)
}

/// A 64-byte printable-ASCII payload: 16 hex digits of `seq`, 32 letters derived from
/// `seq` and `tag`, and 16 hex digits of the checksum of the first 48 bytes.
pub fn make_text(seq: u64, tag: u64) -> Payload {
    let mut p = [0u8; LEN];
    put_hex(&mut p[..16], seq);
    let mut r = mix(seq ^ tag);
    for (i, c) in p[16..48].iter_mut().enumerate() {
        if i % 8 == 0 {
            r = mix(r);
        }
        *c = b'a' + ((r >> (8 * (i % 8))) % 26) as u8;
    }
    let sum = text_sum(&p);
    put_hex(&mut p[48..], sum);
    p
}

/// Checks a text payload: length, checksum and sequence number.
pub fn check_text(p: &[u8], seq: u64) -> Result<(), String> {
    if p.len() != LEN {
        return Err(format!("text payload is {} bytes, expected {LEN}", p.len()));
    }
    if get_hex(&p[48..]) != Some(text_sum(p)) {
        return Err(format!("text payload checksum mismatch at sequence {seq}"));
    }
    match get_hex(&p[..16]) {
        Some(s) if s == seq => Ok(()),
        got => Err(format!("expected text payload seq {seq}, got {got:?}")),
    }
}

/// A text payload as `&str` (it is ASCII by construction).
pub fn as_str(p: &Payload) -> &str {
    std::str::from_utf8(p).expect("text payloads are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_catch_damage() {
        let p = make(42, PING);
        check(&p, 42, PING).unwrap();
        assert_eq!(decode(&p).unwrap(), (42, PING));
        assert!(check(&p, 43, PING).is_err());
        assert!(check(&p, 42, PONG).is_err());
        let mut bad = p;
        bad[20] ^= 1;
        assert!(check(&bad, 42, PING).is_err());
        assert_eq!(from_words(&to_words(&p)), p);
    }

    #[test]
    fn text_payloads_are_ascii_and_checked() {
        let p = make_text(7, PONG);
        assert!(p.iter().all(|c| c.is_ascii_graphic()));
        check_text(as_str(&p).as_bytes(), 7).unwrap();
        assert!(check_text(&p, 8).is_err());
        let mut bad = p;
        bad[30] = if bad[30] == b'a' { b'b' } else { b'a' };
        assert!(check_text(&bad, 7).is_err());
    }
}
