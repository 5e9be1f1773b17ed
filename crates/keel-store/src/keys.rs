//! Byte layouts of the state machine's keys: revisions, an order-preserving key encoding for history, and
//! etcd's key-range rules.

/// A point in the store's history: `main` is the store revision a write created, `sub` orders the changes
/// one write (a transaction) made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    pub const fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }

    /// 16 bytes, big-endian, so byte order is revision order (revisions are never negative).
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&(self.main as u64).to_be_bytes());
        b[8..].copy_from_slice(&(self.sub as u64).to_be_bytes());
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != 16 {
            return None;
        }
        let main = u64::from_be_bytes(b[..8].try_into().ok()?) as i64;
        let sub = u64::from_be_bytes(b[8..].try_into().ok()?) as i64;
        Some(Revision { main, sub })
    }
}

const GROUP: usize = 8;
const MARKER_FULL: u8 = 0xFF;

/// Encodes `key` so that encoded keys sort like the keys and no encoded key is a prefix of another: groups
/// of 8 bytes, each followed by a marker (0xFF: more follows; 0xFF - n: the group had n bytes of padding).
/// A history key is `encode(key) ++ revision`, so all versions of a key sort together, oldest first.
pub fn encode_key(key: &[u8], out: &mut Vec<u8>) {
    out.reserve((key.len() / GROUP + 1) * (GROUP + 1));
    let mut chunks = key.chunks_exact(GROUP);
    for chunk in chunks.by_ref() {
        out.extend_from_slice(chunk);
        out.push(MARKER_FULL);
    }
    let rest = chunks.remainder();
    let pad = GROUP - rest.len();
    out.extend_from_slice(rest);
    out.extend(std::iter::repeat_n(0u8, pad));
    out.push(MARKER_FULL - pad as u8);
}

/// Decodes a key written by [`encode_key`] at the start of `buf`; returns the key and the bytes consumed.
pub fn decode_key(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut key = Vec::new();
    let mut pos = 0;
    loop {
        let group = buf.get(pos..pos + GROUP)?;
        let marker = *buf.get(pos + GROUP)?;
        pos += GROUP + 1;
        if marker == MARKER_FULL {
            key.extend_from_slice(group);
            continue;
        }
        let pad = (MARKER_FULL - marker) as usize;
        if pad > GROUP {
            return None;
        }
        key.extend_from_slice(&group[..GROUP - pad]);
        return Some((key, pos));
    }
}

/// The history key of `key` at `rev`.
pub fn history_key(key: &[u8], rev: Revision) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 32);
    encode_key(key, &mut out);
    out.extend_from_slice(&rev.to_bytes());
    out
}

/// Splits a history key into the key and the revision.
pub fn split_history_key(hk: &[u8]) -> Option<(Vec<u8>, Revision)> {
    let (key, used) = decode_key(hk)?;
    let rev = Revision::from_bytes(&hk[used..])?;
    Some((key, rev))
}

/// A key range as etcd's requests give it (`key`, `range_end`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRange {
    /// Exactly one key (`range_end` empty).
    Single(Vec<u8>),
    /// `[start, end)`; `end: None` means every key from `start` on (`range_end` = `\0`).
    Span { start: Vec<u8>, end: Option<Vec<u8>> },
}

impl KeyRange {
    pub fn new(key: &[u8], range_end: &[u8]) -> Self {
        if range_end.is_empty() {
            KeyRange::Single(key.to_vec())
        } else if range_end == [0] {
            KeyRange::Span { start: key.to_vec(), end: None }
        } else {
            KeyRange::Span { start: key.to_vec(), end: Some(range_end.to_vec()) }
        }
    }

    pub fn start(&self) -> &[u8] {
        match self {
            KeyRange::Single(k) => k,
            KeyRange::Span { start, .. } => start,
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Single(k) => k == key,
            KeyRange::Span { start, end } => key >= start.as_slice() && end.as_deref().is_none_or(|e| key < e),
        }
    }

    /// True when no key sorts at or after `key` inside the range (a scan may stop).
    pub fn is_past(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Single(k) => key > k.as_slice(),
            KeyRange::Span { end, .. } => end.as_deref().is_some_and(|e| key >= e),
        }
    }

    /// True when the range holds no key at all (e.g. `range_end` <= `key`).
    pub fn is_empty(&self) -> bool {
        match self {
            KeyRange::Single(_) => false,
            KeyRange::Span { start, end } => end.as_deref().is_some_and(|e| e <= start.as_slice()),
        }
    }
}

/// The `range_end` that selects every key with `prefix` (etcd's "prefix + 1"); `\0` when none exists.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_preserves_order_and_is_prefix_free() {
        let mut keys: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![0, 0],
            b"a".to_vec(),
            b"a\0".to_vec(),
            b"a\xff".to_vec(),
            b"abcdefgh".to_vec(),
            b"abcdefgh\0".to_vec(),
            b"abcdefgi".to_vec(),
            b"abcdefghijklmnopq".to_vec(),
            vec![0xFF; 9],
            b"b".to_vec(),
        ];
        keys.sort();
        let enc: Vec<Vec<u8>> = keys
            .iter()
            .map(|k| {
                let mut v = Vec::new();
                encode_key(k, &mut v);
                v
            })
            .collect();
        for (i, e) in enc.iter().enumerate() {
            assert_eq!(decode_key(e).unwrap(), (keys[i].clone(), e.len()));
            for (j, f) in enc.iter().enumerate() {
                assert_eq!(keys[i].cmp(&keys[j]), e.cmp(f), "{:?} vs {:?}", keys[i], keys[j]);
                if i != j {
                    assert!(!f.starts_with(e), "{:?} is a prefix of {:?}", keys[i], keys[j]);
                }
            }
        }
    }

    #[test]
    fn history_keys_sort_by_key_then_revision() {
        let a1 = history_key(b"a", Revision::new(5, 0));
        let a2 = history_key(b"a", Revision::new(7, 1));
        let ab = history_key(b"ab", Revision::new(2, 0));
        assert!(a1 < a2 && a2 < ab);
        assert_eq!(split_history_key(&a2).unwrap(), (b"a".to_vec(), Revision::new(7, 1)));
    }

    #[test]
    fn ranges_follow_etcd_rules() {
        assert!(KeyRange::new(b"a", b"").contains(b"a"));
        assert!(!KeyRange::new(b"a", b"").contains(b"ab"));
        let all = KeyRange::new(&[0], &[0]);
        assert!(all.contains(b"zzz") && all.contains(&[0, 1]));
        let p = KeyRange::new(b"foo", &prefix_end(b"foo"));
        assert!(p.contains(b"foo") && p.contains(b"foo/bar") && !p.contains(b"fop"));
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert!(KeyRange::new(b"b", b"a").is_empty());
    }
}
