//! Capability tokens: an agent name, a set of rights, an optional subtree and an
//! expiry, sealed with a keyed BLAKE3 MAC (issue 11, part 2).
//!
//! The text form is `wnt1.` followed by lowercase hex of a fixed binary layout
//! and its 32-byte MAC:
//!
//! | bytes | field |
//! | --- | --- |
//! | 1 | version, `1` |
//! | 2 | rights, little-endian bit set (unknown bits refused) |
//! | 1 | flags: bit 0 = a subtree is given (other bits refused) |
//! | 16 | subtree node UUID (all zero when no subtree) |
//! | 8 | expiry, Unix milliseconds, little-endian |
//! | 16 | random token id |
//! | 1 | agent name length, 1 to [`AGENT_NAME_MAX`] |
//! | n | agent name, UTF-8, no control characters |
//! | 32 | `blake3::keyed_hash(key, "wnt1" ‖ body)` |
//!
//! A token is therefore at most [`TOKEN_TEXT_MAX`] characters, and parsing
//! refuses anything else: another prefix, upper-case hex, a wrong length,
//! trailing bytes. The MAC is compared as a [`blake3::Hash`], whose equality is
//! constant-time.
//!
//! # Examples
//!
//! ```
//! use worknode::{mint, verify, RevocationList, Right, Rights, TokenError, TokenKey};
//!
//! let key = TokenKey::generate().unwrap();
//! let rights = Rights::READ | Rights::CLAIM;
//! let (token, text) = mint(&key, "worker-1", rights, None, 10_000).unwrap();
//! let mut revoked = RevocationList::default();
//! assert_eq!(verify(&key, &text, 5_000, &revoked), Ok(token.clone()));
//! assert!(token.allows(Right::Claim, &[]));
//! assert!(!token.allows(Right::Create, &[]));
//! assert_eq!(verify(&key, &text, 10_000, &revoked), Err(TokenError::Expired));
//! revoked.insert(token.id);
//! assert_eq!(verify(&key, &text, 5_000, &revoked), Err(TokenError::Revoked));
//! ```

use std::collections::HashSet;
use std::fmt;
use std::ops::{BitOr, BitOrAssign};
use std::str::FromStr;

use uuid::Uuid;

use crate::layout::AGENT_NAME_MAX;

/// The prefix of every token's text form.
pub const TOKEN_PREFIX: &str = "wnt1.";
const DOMAIN: &[u8] = b"wnt1";
const VERSION: u8 = 1;
const FIXED: usize = 1 + 2 + 1 + 16 + 8 + 16 + 1;
const MAC_LEN: usize = 32;
/// The longest text a token can have, in bytes.
pub const TOKEN_TEXT_MAX: usize = TOKEN_PREFIX.len() + 2 * (FIXED + AGENT_NAME_MAX + MAC_LEN);
const TOKEN_TEXT_MIN: usize = TOKEN_PREFIX.len() + 2 * (FIXED + 1 + MAC_LEN);

/// One right a token can grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Right {
    /// Read nodes, documents, events.
    Read,
    /// Create nodes.
    Create,
    /// Claim tasks.
    Claim,
    /// Update nodes (status, value, progress, complete).
    Update,
    /// Write documents.
    Doc,
    /// Emit events.
    Emit,
    /// Send messages.
    Message,
    /// Reserve paths.
    Reserve,
    /// Administrative verbs (tokens, agents, maintenance).
    Admin,
}

impl Right {
    /// Every right, in bit order.
    pub const ALL: [Right; 9] = [
        Right::Read,
        Right::Create,
        Right::Claim,
        Right::Update,
        Right::Doc,
        Right::Emit,
        Right::Message,
        Right::Reserve,
        Right::Admin,
    ];

    /// The lower-case name used in lists (`read`, `create`, …).
    pub fn name(self) -> &'static str {
        match self {
            Right::Read => "read",
            Right::Create => "create",
            Right::Claim => "claim",
            Right::Update => "update",
            Right::Doc => "doc",
            Right::Emit => "emit",
            Right::Message => "message",
            Right::Reserve => "reserve",
            Right::Admin => "admin",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of [`Right`]s, stored as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub struct Rights(u16);

impl TryFrom<u16> for Rights {
    type Error = &'static str;
    fn try_from(bits: u16) -> Result<Rights, &'static str> {
        Rights::from_bits(bits).ok_or("unknown right bits")
    }
}

impl From<Rights> for u16 {
    fn from(r: Rights) -> u16 {
        r.0
    }
}

impl Rights {
    /// No rights.
    pub const NONE: Rights = Rights(0);
    /// See [`Right::Read`].
    pub const READ: Rights = Rights(1 << 0);
    /// See [`Right::Create`].
    pub const CREATE: Rights = Rights(1 << 1);
    /// See [`Right::Claim`].
    pub const CLAIM: Rights = Rights(1 << 2);
    /// See [`Right::Update`].
    pub const UPDATE: Rights = Rights(1 << 3);
    /// See [`Right::Doc`].
    pub const DOC: Rights = Rights(1 << 4);
    /// See [`Right::Emit`].
    pub const EMIT: Rights = Rights(1 << 5);
    /// See [`Right::Message`].
    pub const MESSAGE: Rights = Rights(1 << 6);
    /// See [`Right::Reserve`].
    pub const RESERVE: Rights = Rights(1 << 7);
    /// See [`Right::Admin`].
    pub const ADMIN: Rights = Rights(1 << 8);
    /// Every right.
    pub const ALL: Rights = Rights((1 << 9) - 1);

    /// The raw bit set.
    pub fn bits(self) -> u16 {
        self.0
    }

    /// The set from raw bits, or `None` if an unknown bit is set.
    pub fn from_bits(bits: u16) -> Option<Rights> {
        (bits & !Rights::ALL.0 == 0).then_some(Rights(bits))
    }

    /// Whether `right` is in the set.
    pub fn contains(self, right: Right) -> bool {
        self.0 & right.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl From<Right> for Rights {
    fn from(r: Right) -> Rights {
        Rights(r.bit())
    }
}

impl BitOr for Rights {
    type Output = Rights;
    fn bitor(self, rhs: Rights) -> Rights {
        Rights(self.0 | rhs.0)
    }
}

impl BitOrAssign for Rights {
    fn bitor_assign(&mut self, rhs: Rights) {
        self.0 |= rhs.0;
    }
}

impl fmt::Display for Rights {
    /// A comma-separated list (`read,claim`), or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut first = true;
        for r in Right::ALL.iter().filter(|r| self.contains(**r)) {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            f.write_str(r.name())?;
        }
        Ok(())
    }
}

impl FromStr for Rights {
    type Err = TokenError;
    /// Parses `read,claim`, `all`, or `none`; an unknown name is
    /// [`TokenError::UnknownRight`].
    fn from_str(s: &str) -> Result<Rights, TokenError> {
        let mut set = Rights::NONE;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "all" => set |= Rights::ALL,
                "none" => {}
                _ => match Right::ALL.iter().find(|r| r.name() == part) {
                    Some(r) => set |= Rights::from(*r),
                    None => return Err(TokenError::UnknownRight(part.to_string())),
                },
            }
        }
        Ok(set)
    }
}

/// A token's random 128-bit id, shown as 32 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct TokenId(pub [u8; 16]);

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for TokenId {
    type Err = TokenError;
    /// Exactly 32 lower-case hex digits.
    fn from_str(s: &str) -> Result<TokenId, TokenError> {
        let v = hex_decode(s).ok_or(TokenError::Malformed)?;
        Ok(TokenId(v.try_into().map_err(|_| TokenError::Malformed)?))
    }
}

/// The 32-byte secret that seals tokens. Its `Debug` form does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenKey([u8; 32]);

impl TokenKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<TokenKey, getrandom::Error> {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k)?;
        Ok(TokenKey(k))
    }

    /// A key from its bytes (as read from a key file).
    pub fn from_bytes(bytes: [u8; 32]) -> TokenKey {
        TokenKey(bytes)
    }

    /// The key's bytes (to write a key file).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// The ids of revoked tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationList(HashSet<TokenId>);

impl RevocationList {
    /// Adds an id; returns whether it was new.
    pub fn insert(&mut self, id: TokenId) -> bool {
        self.0.insert(id)
    }

    /// Whether the id is revoked.
    pub fn contains(&self, id: &TokenId) -> bool {
        self.0.contains(id)
    }

    /// How many ids are revoked.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no id is revoked.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<TokenId> for RevocationList {
    fn from_iter<I: IntoIterator<Item = TokenId>>(iter: I) -> Self {
        RevocationList(iter.into_iter().collect())
    }
}

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Token {
    /// The random id (for listing and revoking).
    pub id: TokenId,
    /// The agent the holder acts as.
    pub agent: String,
    /// What the holder may do.
    pub rights: Rights,
    /// The subtree the rights hold in, or `None` for the whole tree.
    pub subtree: Option<Uuid>,
    /// Expiry, Unix milliseconds: the token is refused at and after it.
    pub expires_ms: u64,
}

/// Why a token was not minted or not accepted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TokenError {
    /// Not a token: wrong prefix, length, characters, or layout.
    Malformed,
    /// The MAC does not match: forged, altered, or sealed with another key.
    BadMac,
    /// Past its expiry.
    Expired,
    /// Its id is on the revocation list.
    Revoked,
    /// An agent name that is empty, too long, or holds a control character.
    BadAgent,
    /// A right name that is not one of [`Right::ALL`].
    UnknownRight(String),
    /// The operating system's random source failed.
    Random,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Malformed => f.write_str("not a well-formed token"),
            TokenError::BadMac => f.write_str("token MAC does not match (forged, altered, or another key)"),
            TokenError::Expired => f.write_str("token expired"),
            TokenError::Revoked => f.write_str("token revoked"),
            TokenError::BadAgent => {
                write!(f, "agent name must be 1 to {AGENT_NAME_MAX} bytes without control characters")
            }
            TokenError::UnknownRight(r) => write!(f, "unknown right {r:?}"),
            TokenError::Random => f.write_str("the random source failed"),
        }
    }
}

impl std::error::Error for TokenError {}

fn check_agent(name: &str) -> Result<(), TokenError> {
    if name.is_empty() || name.len() > AGENT_NAME_MAX || crate::node::check_name(name).is_err() {
        return Err(TokenError::BadAgent);
    }
    Ok(())
}

impl Token {
    /// A token with a fresh random id.
    pub fn new(agent: &str, rights: Rights, subtree: Option<Uuid>, expires_ms: u64) -> Result<Token, TokenError> {
        check_agent(agent)?;
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|_| TokenError::Random)?;
        Ok(Token { id: TokenId(id), agent: agent.to_string(), rights, subtree, expires_ms })
    }

    /// Whether the token grants `right` on a node whose ancestry (the node's
    /// own UUID and those of all its ancestors, in any order) is `ancestry`.
    /// A token without a subtree allows the right everywhere; one with a
    /// subtree only where the subtree's UUID is in the ancestry. Pass an empty
    /// ancestry for verbs that name no node: only whole-tree tokens pass.
    pub fn allows(&self, right: Right, ancestry: &[Uuid]) -> bool {
        self.rights.contains(right)
            && match self.subtree {
                None => true,
                Some(s) => ancestry.contains(&s),
            }
    }

    fn body(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(FIXED + self.agent.len());
        b.push(VERSION);
        b.extend_from_slice(&self.rights.0.to_le_bytes());
        b.push(u8::from(self.subtree.is_some()));
        b.extend_from_slice(self.subtree.unwrap_or(Uuid::nil()).as_bytes());
        b.extend_from_slice(&self.expires_ms.to_le_bytes());
        b.extend_from_slice(&self.id.0);
        // check_agent bounds the length to AGENT_NAME_MAX (64).
        b.push(self.agent.len() as u8);
        b.extend_from_slice(self.agent.as_bytes());
        b
    }

    /// The token's text form, sealed with `key`.
    pub fn encode(&self, key: &TokenKey) -> Result<String, TokenError> {
        check_agent(&self.agent)?;
        let body = self.body();
        let mac = seal(key, &body);
        let mut s = String::with_capacity(TOKEN_TEXT_MAX);
        s.push_str(TOKEN_PREFIX);
        hex_encode(&body, &mut s);
        hex_encode(mac.as_bytes(), &mut s);
        Ok(s)
    }
}

fn seal(key: &TokenKey, body: &[u8]) -> blake3::Hash {
    let mut h = blake3::Hasher::new_keyed(&key.0);
    h.update(DOMAIN);
    h.update(body);
    h.finalize()
}

/// Mints a token: a fresh id, sealed with `key`. Returns the token and its text.
pub fn mint(
    key: &TokenKey,
    agent: &str,
    rights: Rights,
    subtree: Option<Uuid>,
    expires_ms: u64,
) -> Result<(Token, String), TokenError> {
    let t = Token::new(agent, rights, subtree, expires_ms)?;
    let s = t.encode(key)?;
    Ok((t, s))
}

/// Parses the text without checking the MAC, expiry or revocation: for
/// showing what a token claims. Never trust its result for access.
pub fn decode_unverified(text: &str) -> Result<Token, TokenError> {
    parse(text).map(|(t, _, _)| t)
}

fn parse(text: &str) -> Result<(Token, Vec<u8>, [u8; 32]), TokenError> {
    if text.len() < TOKEN_TEXT_MIN || text.len() > TOKEN_TEXT_MAX {
        return Err(TokenError::Malformed);
    }
    let hex = text.strip_prefix(TOKEN_PREFIX).ok_or(TokenError::Malformed)?;
    let raw = hex_decode(hex).ok_or(TokenError::Malformed)?;
    let (body, mac) = raw.split_at(raw.len() - MAC_LEN);
    if body[0] != VERSION {
        return Err(TokenError::Malformed);
    }
    let rights = Rights::from_bits(u16::from_le_bytes([body[1], body[2]])).ok_or(TokenError::Malformed)?;
    let flags = body[3];
    let uuid: [u8; 16] = body[4..20].try_into().map_err(|_| TokenError::Malformed)?;
    let subtree = match flags {
        0 if uuid == [0; 16] => None,
        1 => Some(Uuid::from_bytes(uuid)),
        _ => return Err(TokenError::Malformed),
    };
    let expires_ms = u64::from_le_bytes(body[20..28].try_into().map_err(|_| TokenError::Malformed)?);
    let id = TokenId(body[28..44].try_into().map_err(|_| TokenError::Malformed)?);
    let n = usize::from(body[44]);
    if body.len() != FIXED + n {
        return Err(TokenError::Malformed);
    }
    let agent = std::str::from_utf8(&body[FIXED..]).map_err(|_| TokenError::Malformed)?;
    check_agent(agent).map_err(|_| TokenError::Malformed)?;
    let mac: [u8; 32] = mac.try_into().map_err(|_| TokenError::Malformed)?;
    let t = Token { id, agent: agent.to_string(), rights, subtree, expires_ms };
    Ok((t, body.to_vec(), mac))
}

/// Checks a token's text: well formed, sealed with `key`, not revoked, and
/// not expired at `now_ms`. Checks run in that order, so a forged token is
/// [`TokenError::BadMac`] whatever it claims.
pub fn verify(key: &TokenKey, text: &str, now_ms: u64, revoked: &RevocationList) -> Result<Token, TokenError> {
    let (t, body, mac) = parse(text)?;
    // blake3::Hash's PartialEq is constant-time.
    if seal(key, &body) != blake3::Hash::from_bytes(mac) {
        return Err(TokenError::BadMac);
    }
    if revoked.contains(&t.id) {
        return Err(TokenError::Revoked);
    }
    if now_ms >= t.expires_ms {
        return Err(TokenError::Expired);
    }
    Ok(t)
}

fn hex_encode(bytes: &[u8], out: &mut String) {
    const D: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(D[usize::from(b >> 4)]));
        out.push(char::from(D[usize::from(b & 15)]));
    }
}

/// Strict lower-case hex; `None` for odd lengths or any other character.
fn hex_decode(s: &str) -> Option<Vec<u8>> {
    fn nib(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let s = s.as_bytes();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks_exact(2).map(|p| Some(nib(p[0])? << 4 | nib(p[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> TokenKey {
        TokenKey::from_bytes([7; 32])
    }

    #[test]
    fn round_trip_and_bounds() {
        let sub = Uuid::from_u128(0x1234);
        let long = "a".repeat(AGENT_NAME_MAX);
        let (t, s) = mint(&key(), &long, Rights::ALL, Some(sub), u64::MAX).unwrap();
        assert_eq!(s.len(), TOKEN_TEXT_MAX);
        assert_eq!(verify(&key(), &s, 0, &RevocationList::default()), Ok(t.clone()));
        assert_eq!(decode_unverified(&s), Ok(t));
        let (_, short) = mint(&key(), "a", Rights::NONE, None, 1).unwrap();
        assert_eq!(short.len(), TOKEN_TEXT_MIN);
    }

    #[test]
    fn refusals() {
        let none = RevocationList::default();
        let (t, s) = mint(&key(), "w", Rights::READ, None, 100).unwrap();
        assert_eq!(verify(&TokenKey::from_bytes([8; 32]), &s, 0, &none), Err(TokenError::BadMac));
        assert_eq!(verify(&key(), &s, 100, &none), Err(TokenError::Expired));
        assert_eq!(verify(&key(), &s, 99, &none).map(|t| t.agent), Ok("w".into()));
        let revoked: RevocationList = [t.id].into_iter().collect();
        assert_eq!(verify(&key(), &s, 0, &revoked), Err(TokenError::Revoked));
        assert_eq!(verify(&key(), &s.to_uppercase(), 0, &none), Err(TokenError::Malformed));
        assert_eq!(verify(&key(), &format!("{s}00"), 0, &none), Err(TokenError::Malformed));
        assert_eq!(verify(&key(), "", 0, &none), Err(TokenError::Malformed));
        assert_eq!(mint(&key(), "", Rights::READ, None, 1).unwrap_err(), TokenError::BadAgent);
        assert_eq!(mint(&key(), "a\nb", Rights::READ, None, 1).unwrap_err(), TokenError::BadAgent);
        assert_eq!(mint(&key(), &"a".repeat(65), Rights::READ, None, 1).unwrap_err(), TokenError::BadAgent);
    }

    #[test]
    fn allows_and_rights() {
        let sub = Uuid::from_u128(1);
        let (t, _) = mint(&key(), "w", Rights::READ | Rights::CLAIM, Some(sub), 1).unwrap();
        assert!(t.allows(Right::Claim, &[Uuid::from_u128(9), sub]));
        assert!(!t.allows(Right::Claim, &[Uuid::from_u128(9)]));
        assert!(!t.allows(Right::Claim, &[]));
        assert!(!t.allows(Right::Create, &[sub]));
        let r: Rights = "read, claim,admin".parse().unwrap();
        assert_eq!(r.to_string(), "read,claim,admin");
        assert_eq!("all".parse::<Rights>().unwrap(), Rights::ALL);
        assert_eq!("bogus".parse::<Rights>(), Err(TokenError::UnknownRight("bogus".into())));
        assert_eq!(Rights::from_bits(1 << 9), None);
        let id = t.id.to_string();
        assert_eq!(id.parse::<TokenId>(), Ok(t.id));
        assert_eq!("xyz".parse::<TokenId>(), Err(TokenError::Malformed));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_strings_never_panic(s in "\\PC{0,400}", h in "wnt1\\.[0-9a-f]{0,300}") {
            let none = RevocationList::default();
            let _ = verify(&key(), &s, 0, &none);
            prop_assert!(verify(&key(), &h, 0, &none).is_err());
        }

        #[test]
        fn one_byte_changed_is_refused(
            agent in "[a-z0-9-]{1,64}",
            bits in 0u16..512,
            sub in proptest::option::of(any::<u128>()),
            exp in 1u64..,
            at in any::<prop::sample::Index>(),
            to in any::<u8>(),
        ) {
            let rights = Rights::from_bits(bits).unwrap();
            let (t, s) = mint(&key(), &agent, rights, sub.map(Uuid::from_u128), exp).unwrap();
            let none = RevocationList::default();
            prop_assert_eq!(verify(&key(), &s, 0, &none), Ok(t));
            let mut b = s.into_bytes();
            let i = at.index(b.len());
            prop_assume!(b[i] != to);
            b[i] = to;
            let changed = String::from_utf8_lossy(&b);
            prop_assert!(verify(&key(), &changed, 0, &none).is_err());
        }
    }
}
