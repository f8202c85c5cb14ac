//! Path globs for file reservations: parsing, matching a path, and deciding whether two
//! globs *overlap* (some path matches both). Pure: no segment, no allocation.
//!
//! # The language
//!
//! Paths are relative and `/`-separated, with no empty segment and no `..` segment.
//!
//! | piece | matches |
//! |---|---|
//! | `*` | any run of characters within one segment (not `/`), the empty run too |
//! | `?` | one character other than `/` |
//! | `[abc]`, `[a-z]`, `[!x]` (or `[^x]`) | one character of (not of) the class, never `/`; a `]` first in the class is literal |
//! | `**` | a whole segment only: any number of segments (`a/**/b` matches `a/b` and `a/x/y/b`; a trailing `a/**` everything beneath `a`; `**` alone every path) |
//! | anything else | itself |
//!
//! There is no escape character. Refused ([`GlobError`]): an empty glob, one over
//! [`GLOB_MAX`] bytes, an absolute one, an empty or `..` segment (`a//b`, a trailing
//! `/`), a control character, an unclosed or backward class, a `/` in a class, and a
//! `**` that is not a whole segment (`a**` — write `a*` or `a*/**`).
//!
//! # Overlap as a product automaton
//!
//! A glob compiles to at most [`GLOB_MAX`] tokens: a character set consumed once, or a
//! set consumed any number of times (`*` is non-`/` characters; `**/` any characters,
//! left only at the start of a segment: after nothing or after a `/`). Two globs
//! overlap exactly when the product of their automata — state `(i, j, at_segment_start)`,
//! the last bit enforcing that the shared path has no empty segment — reaches
//! `(end, end, inside a segment)`. Every move either stays at `(i, j)` (both loop) or
//! advances `i` or `j`, so one pass over `(i, j)` in lexicographic order, closing each
//! cell's two states under the loops first, decides reachability: at most
//! `(GLOB_MAX + 1)² × 2` states in a fixed bitset on the stack, no allocation.
//! Whether a move is possible is whether some character lies in both sets (and is or is
//! not `/`): sets are finite unions of ranges, or their complements, so if their
//! intersection is not empty it holds a range's low end or the point after a range's
//! high end, and only those candidates are tried.

use std::fmt;

/// The longest glob, in bytes.
pub const GLOB_MAX: usize = 200;

/// The longest path [`Glob::matches`] and the reservation check accept, in bytes.
pub const PATH_MAX: usize = 4096;

/// Ranges one class may hold.
const CLASS_RANGES: usize = 8;

/// Why a glob (or a path) was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GlobError {
    /// The glob is empty.
    Empty,
    /// Longer than the limit ([`GLOB_MAX`] for a glob, [`PATH_MAX`] for a path).
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// It starts with `/`: globs and paths are relative to the repository.
    Absolute,
    /// A `..` segment.
    DotDot,
    /// An empty segment (`a//b`, or a trailing `/`).
    EmptySegment,
    /// A control character at this byte offset.
    Control {
        /// Byte offset.
        at: usize,
    },
    /// A `[` without its `]`, at this byte offset.
    UnclosedClass {
        /// Byte offset of the `[`.
        at: usize,
    },
    /// A range whose end precedes its start (`[z-a]`), or a class with more than 8 ranges.
    BadClass {
        /// Byte offset of the `[`.
        at: usize,
    },
    /// A `/` inside a class.
    SlashInClass {
        /// Byte offset of the `[`.
        at: usize,
    },
    /// `**` inside a segment (`a**`, `**b`): `**` stands for whole segments only.
    PartialGlobstar {
        /// Byte offset of the `**`.
        at: usize,
    },
}

impl fmt::Display for GlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use GlobError::*;
        match self {
            Empty => write!(f, "empty glob"),
            TooLong { len, max } => write!(f, "{len} bytes, the limit is {max}"),
            Absolute => write!(f, "absolute path"),
            DotDot => write!(f, "\"..\" segment"),
            EmptySegment => write!(f, "empty segment"),
            Control { at } => write!(f, "control character at byte {at}"),
            UnclosedClass { at } => write!(f, "unclosed \"[\" at byte {at}"),
            BadClass { at } => write!(f, "bad class at byte {at}"),
            SlashInClass { at } => write!(f, "\"/\" in the class at byte {at}"),
            PartialGlobstar { at } => write!(f, "\"**\" inside a segment at byte {at}"),
        }
    }
}

impl std::error::Error for GlobError {}

/// A set of characters: `ranges[..len]` (inclusive), or everything but them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CharSet {
    ranges: [(u32, u32); CLASS_RANGES],
    len: u8,
    negated: bool,
}

const SLASH: u32 = '/' as u32;

impl CharSet {
    const fn of(ranges: &[(u32, u32)], negated: bool) -> CharSet {
        let mut r = [(0, 0); CLASS_RANGES];
        let mut i = 0;
        while i < ranges.len() {
            r[i] = ranges[i];
            i += 1;
        }
        CharSet { ranges: r, len: ranges.len() as u8, negated }
    }

    const fn one(c: u32) -> CharSet {
        CharSet::of(&[(c, c)], false)
    }

    fn ranges(&self) -> &[(u32, u32)] {
        &self.ranges[..self.len as usize]
    }

    fn contains(&self, c: u32) -> bool {
        self.ranges().iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negated
    }
}

/// Any character but `/`.
const NOT_SLASH: CharSet = CharSet::of(&[(SLASH, SLASH)], true);
/// Any character.
const ANY: CharSet = CharSet::of(&[], true);

/// Whether some character lies in `a` and in `b` and is `/` (`slash`) or is not.
fn meet(a: &CharSet, b: &CharSet, slash: bool) -> bool {
    if slash {
        return a.contains(SLASH) && b.contains(SLASH);
    }
    // If the intersection of these finite unions of ranges (and complements) is not
    // empty, it holds 0, a range's low end or the point after a range's high end.
    let ok = |c: u32| c != SLASH && a.contains(c) && b.contains(c);
    if ok(0) || ok(SLASH + 1) {
        return true;
    }
    a.ranges().iter().chain(b.ranges()).any(|&(lo, hi)| ok(lo) || ok(hi.saturating_add(1)))
}

/// One step of a compiled glob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    /// One character of the set.
    One(CharSet),
    /// Any number of characters of the set, then an ε-move to the next token — for
    /// `deep` (a `**/`) only at the start of a segment (nothing consumed yet, or a `/`
    /// last), so that it stands for whole segments.
    Many { set: CharSet, deep: bool },
}

/// A parsed glob: its text and its compiled tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob<'a> {
    text: &'a str,
    tokens: [Token; GLOB_MAX],
    len: usize,
}

/// Checks what globs and paths share: relative, bounded, no control character, no empty
/// or `..` segment.
fn check_shape(text: &str, max: usize) -> Result<(), GlobError> {
    if text.is_empty() {
        return Err(GlobError::Empty);
    }
    if text.len() > max {
        return Err(GlobError::TooLong { len: text.len(), max });
    }
    if text.starts_with('/') {
        return Err(GlobError::Absolute);
    }
    if let Some((at, _)) = text.char_indices().find(|(_, c)| c.is_control()) {
        return Err(GlobError::Control { at });
    }
    for seg in text.split('/') {
        match seg {
            "" => return Err(GlobError::EmptySegment),
            ".." => return Err(GlobError::DotDot),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a path as the reservation check takes it (relative, at most [`PATH_MAX`]
/// bytes, no control character, no empty or `..` segment); a leading `./` is dropped.
///
/// # Errors
///
/// The [`GlobError`] naming what is wrong with it.
pub fn check_path(path: &str) -> Result<&str, GlobError> {
    let mut p = path;
    while let Some(rest) = p.strip_prefix("./") {
        p = rest;
    }
    check_shape(p, PATH_MAX)?;
    Ok(p)
}

impl<'a> Glob<'a> {
    /// Parses a glob.
    ///
    /// # Errors
    ///
    /// The [`GlobError`] naming what is malformed (see the module's table).
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{Glob, GlobError};
    /// let g = Glob::parse("src/auth/**")?;
    /// assert!(g.matches("src/auth/login.rs"));
    /// assert!(g.overlaps(&Glob::parse("src/*/login.rs")?));
    /// assert!(!g.overlaps(&Glob::parse("docs/**")?));
    /// assert_eq!(Glob::parse("src/[ab").unwrap_err(), GlobError::UnclosedClass { at: 4 });
    /// # Ok::<(), GlobError>(())
    /// ```
    pub fn parse(text: &'a str) -> Result<Glob<'a>, GlobError> {
        check_shape(text, GLOB_MAX)?;
        let mut g = Glob { text, tokens: [Token::One(ANY); GLOB_MAX], len: 0 };
        let bytes = text.as_bytes();
        let mut seg_start = 0;
        let push = |g: &mut Glob<'a>, t: Token| {
            // Each token takes at least one byte of a glob of at most GLOB_MAX bytes.
            g.tokens[g.len] = t;
            g.len += 1;
        };
        let mut i = 0;
        while i < text.len() {
            let c = text[i..].chars().next().unwrap_or('\0');
            match c {
                '/' => {
                    push(&mut g, Token::One(CharSet::one(SLASH)));
                    seg_start = i + 1;
                    i += 1;
                }
                '*' if bytes.get(i + 1) == Some(&b'*') => {
                    let seg_end = text[i..].find('/').map_or(text.len(), |n| i + n);
                    if i != seg_start || seg_end != i + 2 {
                        return Err(GlobError::PartialGlobstar { at: i });
                    }
                    if seg_end < text.len() {
                        // `**/`: nothing, or any characters ending in a `/`.
                        push(&mut g, Token::Many { set: ANY, deep: true });
                        i += 3;
                        seg_start = i;
                    } else {
                        // A trailing `**`: at least one character, then any.
                        push(&mut g, Token::One(ANY));
                        push(&mut g, Token::Many { set: ANY, deep: false });
                        i += 2;
                    }
                }
                '*' => {
                    push(&mut g, Token::Many { set: NOT_SLASH, deep: false });
                    i += 1;
                }
                '?' => {
                    push(&mut g, Token::One(NOT_SLASH));
                    i += 1;
                }
                '[' => {
                    let (set, next) = parse_class(text, i)?;
                    push(&mut g, Token::One(set));
                    i = next;
                }
                c => {
                    push(&mut g, Token::One(CharSet::one(c as u32)));
                    i += c.len_utf8();
                }
            }
        }
        Ok(g)
    }

    /// The glob's text.
    pub fn as_str(&self) -> &'a str {
        self.text
    }

    fn tokens(&self) -> &[Token] {
        &self.tokens[..self.len]
    }

    /// Whether `path` matches the glob (a path is taken literally: `*` in it is a star).
    pub fn matches(&self, path: &str) -> bool {
        // An NFA simulation over the token positions, one bit each.
        let t = self.tokens();
        let mut cur = [0u64; GLOB_MAX / 64 + 1];
        let set = |s: &mut [u64], i: usize| s[i / 64] |= 1 << (i % 64);
        let has = |s: &[u64], i: usize| s[i / 64] & (1 << (i % 64)) != 0;
        // `at_start`: nothing consumed yet, or a `/` last.
        let close = |s: &mut [u64], at_start: bool| {
            for (i, tok) in t.iter().enumerate() {
                if let Token::Many { deep, .. } = tok {
                    if has(s, i) && (!deep || at_start) {
                        set(s, i + 1);
                    }
                }
            }
        };
        set(&mut cur, 0);
        close(&mut cur, true);
        for c in path.chars() {
            let mut next = [0u64; GLOB_MAX / 64 + 1];
            for (i, tok) in t.iter().enumerate() {
                if !has(&cur, i) {
                    continue;
                }
                match tok {
                    Token::One(s) if s.contains(c as u32) => set(&mut next, i + 1),
                    Token::Many { set: s, .. } if s.contains(c as u32) => set(&mut next, i),
                    _ => {}
                }
            }
            close(&mut next, c == '/');
            if next.iter().all(|w| *w == 0) {
                return false;
            }
            cur = next;
        }
        has(&cur, t.len())
    }

    /// Whether some path matches both globs (a path: relative, no empty segment).
    pub fn overlaps(&self, other: &Glob<'_>) -> bool {
        overlap(self.tokens(), other.tokens())
    }
}

/// Parses the class starting at byte `at` (a `[`); returns it and the byte after `]`.
fn parse_class(text: &str, at: usize) -> Result<(CharSet, usize), GlobError> {
    let mut chars = text[at + 1..].char_indices().map(|(k, c)| (at + 1 + k, c)).peekable();
    let mut negated = false;
    if let Some(&(_, '!' | '^')) = chars.peek() {
        negated = true;
        chars.next();
    }
    let mut ranges = [(0u32, 0u32); CLASS_RANGES];
    let mut n = 0;
    let mut first = true;
    loop {
        let Some((k, c)) = chars.next() else { return Err(GlobError::UnclosedClass { at }) };
        if c == ']' && !first {
            let mut set = CharSet::of(&ranges[..n], negated);
            if negated {
                // A negated class still never matches `/`.
                if n == CLASS_RANGES {
                    return Err(GlobError::BadClass { at });
                }
                set.ranges[n] = (SLASH, SLASH);
                set.len += 1;
            }
            return Ok((set, k + 1));
        }
        first = false;
        if c == '/' {
            return Err(GlobError::SlashInClass { at });
        }
        let mut hi = c;
        if let Some(&(_, '-')) = chars.peek() {
            let mut ahead = chars.clone();
            ahead.next();
            match ahead.peek() {
                Some(&(_, e)) if e != ']' => {
                    chars = ahead;
                    chars.next();
                    hi = e;
                    if e == '/' {
                        return Err(GlobError::SlashInClass { at });
                    }
                }
                _ => {}
            }
        }
        if hi < c || n == CLASS_RANGES {
            return Err(GlobError::BadClass { at });
        }
        // A range across `/` is cut around it: a class never matches `/`.
        let (lo, hi) = (c as u32, hi as u32);
        if lo < SLASH && SLASH < hi {
            if n + 2 > CLASS_RANGES {
                return Err(GlobError::BadClass { at });
            }
            ranges[n] = (lo, SLASH - 1);
            ranges[n + 1] = (SLASH + 1, hi);
            n += 2;
        } else {
            ranges[n] = (lo, hi);
            n += 1;
        }
    }
}

/// Cells of the product automaton: `(GLOB_MAX + 1)²`, two states each.
const CELLS: usize = (GLOB_MAX + 1) * (GLOB_MAX + 1);

/// The product-automaton search (see the module's doc).
fn overlap(p: &[Token], q: &[Token]) -> bool {
    debug_assert!(p.len() <= GLOB_MAX && q.len() <= GLOB_MAX);
    // Bit `2 * cell + v`: state (i, j, v) is reachable; v = 1 inside a segment, 0 at the
    // start of one (the path so far is empty or ends in `/`).
    let mut seen = [0u64; (2 * CELLS).div_ceil(64)];
    let w = q.len() + 1;
    let bit = |i: usize, j: usize, v: usize| 2 * (i * w + j) + v;
    let get = |s: &[u64], b: usize| s[b / 64] & (1 << (b % 64)) != 0;
    let put = |s: &mut [u64], b: usize| s[b / 64] |= 1 << (b % 64);
    put(&mut seen, bit(0, 0, 0));
    // The set a token consumes, and where consuming it leads.
    let step = |t: &[Token], i: usize| match t.get(i) {
        Some(Token::One(s)) => Some((*s, i + 1)),
        Some(Token::Many { set, .. }) => Some((*set, i)),
        None => None,
    };
    // Whether an ε-move leaves token i, in state v.
    let exits = |t: &[Token], i: usize, v: usize| match t.get(i) {
        Some(Token::Many { deep, .. }) => !deep || v == 0,
        _ => false,
    };
    for i in 0..=p.len() {
        for j in 0..=q.len() {
            // Close the cell under moves that stay in it (both tokens loop), which only
            // flip v: two rounds reach every such state.
            if let (Some((a, ni)), Some((b, nj))) = (step(p, i), step(q, j)) {
                if ni == i && nj == j {
                    for _ in 0..2 {
                        for v in 0..2 {
                            if !get(&seen, bit(i, j, v)) {
                                continue;
                            }
                            if v == 1 && meet(&a, &b, true) {
                                put(&mut seen, bit(i, j, 0));
                            }
                            if meet(&a, &b, false) {
                                put(&mut seen, bit(i, j, 1));
                            }
                        }
                    }
                }
            }
            for v in 0..2 {
                if !get(&seen, bit(i, j, v)) {
                    continue;
                }
                // ε-moves out of a loop token, on either side.
                if exits(p, i, v) {
                    put(&mut seen, bit(i + 1, j, v));
                }
                if exits(q, j, v) {
                    put(&mut seen, bit(i, j + 1, v));
                }
                // Both consume one shared character.
                if let (Some((a, ni)), Some((b, nj))) = (step(p, i), step(q, j)) {
                    if v == 1 && meet(&a, &b, true) {
                        put(&mut seen, bit(ni, nj, 0));
                    }
                    if meet(&a, &b, false) {
                        put(&mut seen, bit(ni, nj, 1));
                    }
                }
            }
        }
    }
    get(&seen, bit(p.len(), q.len(), 1))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn overlaps(a: &str, b: &str) -> bool {
        let (a, b) = (Glob::parse(a).unwrap(), Glob::parse(b).unwrap());
        let ab = a.overlaps(&b);
        assert_eq!(ab, b.overlaps(&a), "overlap is symmetric");
        ab
    }

    #[test]
    fn the_examples_of_the_issue() {
        assert!(overlaps("src/auth/**", "src/auth/login.rs"));
        assert!(overlaps("src/*.rs", "src/m?in.rs"));
        assert!(!overlaps("docs/**", "src/**"));
        assert!(overlaps("**", "a"));
        assert!(overlaps("src/**/mod.rs", "src/mod.rs"));
        assert!(overlaps("src/**/mod.rs", "src/a/b/*.rs"));
        assert!(!overlaps("src/*.rs", "src/a/b.rs"));
        assert!(!overlaps("src/auth/**", "src/auth"));
        assert!(overlaps("[a-c]x", "[!a]x"));
        assert!(!overlaps("[a]x", "[!a]x"));
        assert!(!overlaps("a*", "b*"));
        assert!(overlaps("*a", "b*"));
        assert!(!overlaps("*", "a/b"));
    }

    #[test]
    fn matching_a_path() {
        let g = Glob::parse("src/**/*.rs").unwrap();
        assert!(g.matches("src/main.rs"));
        assert!(g.matches("src/a/b/c.rs"));
        assert!(!g.matches("src/main.c"));
        assert!(!g.matches("lib/main.rs"));
        let g = Glob::parse("docs/**").unwrap();
        assert!(g.matches("docs/a"));
        assert!(!g.matches("docs"));
        assert!(Glob::parse("a[!b]c").unwrap().matches("axc"));
        assert!(!Glob::parse("a[!b]c").unwrap().matches("a/c"));
        assert!(Glob::parse("a]").unwrap().matches("a]"));
        assert!(Glob::parse("[]]").unwrap().matches("]"));
        assert!(Glob::parse("[a-]").unwrap().matches("-"));
    }

    #[test]
    fn malformed_globs_are_refused() {
        use GlobError::*;
        let long = "a".repeat(GLOB_MAX + 1);
        for (g, e) in [
            ("", Empty),
            (long.as_str(), TooLong { len: GLOB_MAX + 1, max: GLOB_MAX }),
            ("/etc/passwd", Absolute),
            ("a/../b", DotDot),
            ("..", DotDot),
            ("a//b", EmptySegment),
            ("src/", EmptySegment),
            ("a\nb", Control { at: 1 }),
            ("a\u{1b}[31m", Control { at: 1 }),
            ("src/[ab", UnclosedClass { at: 4 }),
            ("[", UnclosedClass { at: 0 }),
            ("[]", UnclosedClass { at: 0 }),
            ("[z-a]", BadClass { at: 0 }),
            ("[a/b]", SlashInClass { at: 0 }),
            ("a**", PartialGlobstar { at: 1 }),
            ("src/**.rs", PartialGlobstar { at: 4 }),
            ("***", PartialGlobstar { at: 0 }),
        ] {
            assert_eq!(Glob::parse(g).unwrap_err(), e, "{g:?}");
        }
        assert_eq!(check_path("./src/a.rs"), Ok("src/a.rs"));
        assert_eq!(check_path("/abs"), Err(Absolute));
    }

    /// The model: a direct recursive matcher over segments (`**` eats whole segments)
    /// and characters, written from the table rather than from the automaton.
    fn model_match(glob: &str, path: &str) -> bool {
        let g: Vec<&str> = glob.split('/').collect();
        let p: Vec<&str> = path.split('/').collect();
        fn segs(g: &[&str], p: &[&str]) -> bool {
            match g.split_first() {
                None => p.is_empty(),
                Some((&"**", [])) => !p.is_empty(),
                Some((&"**", rest)) => (0..=p.len()).any(|k| segs(rest, &p[k..])),
                Some((s, rest)) => {
                    !p.is_empty()
                        && seg(&s.chars().collect::<Vec<_>>(), &p[0].chars().collect::<Vec<_>>())
                        && segs(rest, &p[1..])
                }
            }
        }
        fn seg(g: &[char], p: &[char]) -> bool {
            match g.first() {
                None => p.is_empty(),
                Some('*') => (0..=p.len()).any(|k| seg(&g[1..], &p[k..])),
                Some('?') => !p.is_empty() && seg(&g[1..], &p[1..]),
                Some('[') => {
                    let end = g.iter().skip(2).position(|c| *c == ']').map(|k| k + 2).unwrap();
                    let body = &g[1..end];
                    let (neg, body) = if body[0] == '!' { (true, &body[1..]) } else { (false, body) };
                    let mut inside = false;
                    let mut k = 0;
                    while k < body.len() {
                        if k + 2 < body.len() && body[k + 1] == '-' {
                            inside |= p.first().is_some_and(|c| body[k] <= *c && *c <= body[k + 2]);
                            k += 3;
                        } else {
                            inside |= p.first() == Some(&body[k]);
                            k += 1;
                        }
                    }
                    !p.is_empty() && inside != neg && seg(&g[end + 1..], &p[1..])
                }
                Some(c) => p.first() == Some(c) && seg(&g[1..], &p[1..]),
            }
        }
        segs(&g, &p)
    }

    /// Every valid path over `a`, `b`, `c` and `/` of up to `max` characters.
    fn paths(max: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut level = vec![String::new()];
        for _ in 0..max {
            let mut next = Vec::new();
            for p in &level {
                for c in ['a', 'b', 'c', '/'] {
                    let mut q = p.clone();
                    q.push(c);
                    if q.starts_with('/') || q.contains("//") {
                        continue;
                    }
                    next.push(q);
                }
            }
            out.extend(next.iter().filter(|p| !p.ends_with('/')).cloned());
            level = next;
        }
        out
    }

    fn segment() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec!["a", "b", "?", "*", "[ab]", "[!a]", "[a-b]"]);
        prop_oneof![
            1 => Just("**".to_string()),
            4 => prop::collection::vec(piece, 1..=2).prop_map(|v| v.concat()),
        ]
    }

    fn glob() -> impl Strategy<Value = String> {
        prop::collection::vec(segment(), 1..=2).prop_map(|v| v.join("/"))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// The automaton agrees with the model: `matches` is the model's match, and two
        /// globs overlap exactly when some path of up to 7 characters (over an alphabet
        /// one letter larger than the globs use) matches both. Patterns this small always
        /// have a witness that short, so "no short witness" means "no witness".
        #[test]
        fn overlap_is_exists_a_path_matching_both(a in glob(), b in glob()) {
            thread_local!(static PATHS: Vec<String> = paths(7));
            let (ga, gb) = (Glob::parse(&a).unwrap(), Glob::parse(&b).unwrap());
            let witness = PATHS.with(|ps| {
                for p in ps {
                    prop_assert_eq!(ga.matches(p), model_match(&a, p), "{} vs {}", a, p);
                }
                Ok(ps.iter().find(|p| model_match(&a, p) && model_match(&b, p)).cloned())
            })?;
            prop_assert_eq!(ga.overlaps(&gb), witness.is_some(), "{} and {}: witness {:?}", a, b, witness);
            prop_assert_eq!(gb.overlaps(&ga), witness.is_some());
        }
    }
}
