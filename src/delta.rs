//! Git's binary delta format, written: a blob as copies from a similar blob plus new bytes.
//!
//! A first snapshot of a real project holds many near-copies: rustdoc pages that share their
//! whole frame, `node_modules` files that differ in a line, build scripts that differ in a
//! hash. zlib sees one object at a time and cannot use that; a pack entry of type `OFS_DELTA`
//! can (see `docs/format.md`). The encoder is the classic one of `git`'s `diff-delta.c`, made
//! simpler: the base is indexed by a hash of each aligned 16-byte block, the target is scanned
//! with a rolling hash of the same 16 bytes, and each verified hit is grown forwards and
//! backwards into one copy instruction. It runs in time linear in base plus target.
//!
//! The format (git's `patch-delta.c`, also read by gix): the base's and the target's sizes as
//! little-endian base-128 numbers, then instructions. `0xxxxxxx` (1 to 127): insert the next
//! that many bytes. `1ssssooo` with its bit-selected offset bytes (4) and size bytes (3) that
//! follow: copy from the base; a size of 0 means 0x10000.

/// Bytes hashed per block: git's `RABIN_WINDOW`. Shorter matches are not worth a copy.
const WINDOW: usize = 16;

/// The longest copy one instruction holds, as git writes them (the format allows 24 bits;
/// 0x10000 is what every reader has always accepted).
const MAX_COPY: usize = 0x10000;

/// The largest base offset an instruction can name (4 offset bytes).
const MAX_BASE: usize = u32::MAX as usize;

/// Multiplier of the polynomial rolling hash (FNV's prime: odd, bits spread).
const PRIME: u32 = 0x0100_0193;

/// Multiplier that spreads a hash over the table's index bits (Knuth's multiplicative hash).
const SPREAD: u32 = 0x9E37_79B1;

/// `PRIME` to the power `WINDOW - 1`: the weight of the byte leaving the rolling window.
const OUTGOING: u32 = {
    let mut weight = 1u32;
    let mut i = 1;
    while i < WINDOW {
        weight = weight.wrapping_mul(PRIME);
        i += 1;
    }
    weight
};

fn block_hash(block: &[u8]) -> u32 {
    block.iter().fold(0u32, |h, &b| {
        h.wrapping_mul(PRIME).wrapping_add(u32::from(b))
    })
}

/// A base blob, indexed for encoding deltas against it: the index is built on first use and
/// kept for any number of targets.
pub struct Base {
    data: Vec<u8>,
    index: std::sync::OnceLock<Index>,
}

/// For each slot, `offset + 1` of an aligned block whose hash lands there, 0 for none. One
/// block per slot (the first): repeated blocks are interchangeable, and a lost collision only
/// costs a shorter match.
struct Index {
    table: Vec<u32>,
    shift: u32,
}

impl Base {
    pub fn new(data: Vec<u8>) -> Base {
        Base {
            data,
            index: std::sync::OnceLock::new(),
        }
    }

    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Memory held, counting the index as if built (it is, as soon as a target comes).
    pub fn footprint(&self) -> usize {
        self.data.len() + table_len(self.data.len()) * 4
    }

    fn index(&self) -> &Index {
        self.index.get_or_init(|| {
            let slots = table_len(self.data.len());
            let shift = 32 - slots.trailing_zeros();
            let mut table = vec![0u32; slots];
            for (i, block) in self.data.chunks_exact(WINDOW).enumerate() {
                let slot = slot(block_hash(block), shift);
                if table[slot] == 0 {
                    // Only built by `encode`, for data.len() <= u32::MAX: the offset + 1 fits.
                    table[slot] = (i * WINDOW) as u32 + 1;
                }
            }
            Index { table, shift }
        })
    }
}

impl Index {
    fn candidate(&self, hash: u32) -> Option<usize> {
        match self.table[slot(hash, self.shift)] {
            0 => None,
            at => Some(at as usize - 1),
        }
    }
}

/// About two slots per block keeps collisions rare; at least 16 slots.
fn table_len(data_len: usize) -> usize {
    ((data_len / WINDOW).max(8) * 2).next_power_of_two()
}

fn slot(hash: u32, shift: u32) -> usize {
    (hash.wrapping_mul(SPREAD) >> shift) as usize
}

/// The delta that rebuilds `target` from `base`, or `None` when it would be longer than
/// `limit` bytes (the encoder stops as soon as it knows, so a poor base costs little), or the
/// base is too large for the format's offsets.
pub fn encode(base: &Base, target: &[u8], limit: usize) -> Option<Vec<u8>> {
    let source = &base.data;
    if source.len() > MAX_BASE {
        return None;
    }
    let index = base.index();
    let mut out = Vec::with_capacity(limit.min(target.len() / 4 + 32));
    push_size(&mut out, source.len());
    push_size(&mut out, target.len());
    // Bytes from `pending` to `at` are not yet covered by an instruction.
    let mut pending = 0;
    let mut at = 0;
    if target.len() >= WINDOW && source.len() >= WINDOW {
        let mut hash = block_hash(&target[..WINDOW]);
        while at + WINDOW <= target.len() {
            if let Some(from) = index.candidate(hash) {
                if source[from..from + WINDOW] == target[at..at + WINDOW] {
                    let ahead =
                        WINDOW + common_prefix(&source[from + WINDOW..], &target[at + WINDOW..]);
                    // Grow the match backwards over bytes still waiting to be inserted.
                    let mut behind = 0;
                    while behind < at - pending
                        && behind < from
                        && source[from - behind - 1] == target[at - behind - 1]
                    {
                        behind += 1;
                    }
                    push_insert(&mut out, &target[pending..at - behind]);
                    push_copy(&mut out, from - behind, ahead + behind);
                    at += ahead;
                    pending = at;
                    if out.len() > limit {
                        return None;
                    }
                    if at + WINDOW <= target.len() {
                        hash = block_hash(&target[at..at + WINDOW]);
                    }
                    continue;
                }
            }
            if at + WINDOW < target.len() {
                hash = hash
                    .wrapping_sub(u32::from(target[at]).wrapping_mul(OUTGOING))
                    .wrapping_mul(PRIME)
                    .wrapping_add(u32::from(target[at + WINDOW]));
            }
            at += 1;
            // Literal bytes cost at least themselves: past the limit already.
            if out.len() + (at - pending) > limit {
                return None;
            }
        }
    }
    push_insert(&mut out, &target[pending..]);
    (out.len() <= limit).then_some(out)
}

/// How many leading bytes `a` and `b` share, eight at a time.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a8, b8) = (a[..n].chunks_exact(8), b[..n].chunks_exact(8));
    let mut same = 0;
    for (x, y) in a8.zip(b8) {
        // chunks_exact(8) yields 8-byte slices, so both conversions succeed.
        let diff = u64::from_le_bytes(x.try_into().expect("8 bytes"))
            ^ u64::from_le_bytes(y.try_into().expect("8 bytes"));
        if diff != 0 {
            return same + (diff.trailing_zeros() / 8) as usize;
        }
        same += 8;
    }
    same + a[same..n]
        .iter()
        .zip(&b[same..n])
        .take_while(|(x, y)| x == y)
        .count()
}

fn push_size(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

fn push_insert(out: &mut Vec<u8>, mut data: &[u8]) {
    while !data.is_empty() {
        let n = data.len().min(127);
        out.push(n as u8);
        out.extend_from_slice(&data[..n]);
        data = &data[n..];
    }
}

fn push_copy(out: &mut Vec<u8>, mut offset: usize, mut len: usize) {
    while len > 0 {
        let n = len.min(MAX_COPY);
        let command_at = out.len();
        let mut command = 0x80u8;
        out.push(command);
        for i in 0..4 {
            let byte = (offset >> (8 * i)) as u8;
            if byte != 0 {
                command |= 1 << i;
                out.push(byte);
            }
        }
        // A size of 0 stands for 0x10000, so a full-length copy has no size bytes.
        let size = if n == MAX_COPY { 0 } else { n };
        for i in 0..3 {
            let byte = (size >> (8 * i)) as u8;
            if byte != 0 {
                command |= 1 << (4 + i);
                out.push(byte);
            }
        }
        out[command_at] = command;
        offset += n;
        len -= n;
    }
}

/// A delta that does not describe a target from this base: truncated, reading past the base,
/// or building more or less than the size it declares. Packs can be damaged or hostile.
#[derive(Debug, thiserror::Error)]
#[error("corrupt delta: {0}")]
pub struct CorruptDelta(&'static str);

/// The target a delta rebuilds from `base` (git's `patch-delta.c`). Never reads or writes
/// out of bounds, and never allocates more than the target size the delta declares, which
/// must not exceed `max_target`.
pub fn apply(base: &[u8], delta: &[u8], max_target: usize) -> Result<Vec<u8>, CorruptDelta> {
    let mut at = 0;
    let size = |at: &mut usize| -> Result<usize, CorruptDelta> {
        let (mut n, mut shift) = (0usize, 0u32);
        loop {
            let byte = *delta.get(*at).ok_or(CorruptDelta("truncated header"))?;
            *at += 1;
            if shift > 63 {
                return Err(CorruptDelta("size too large"));
            }
            n |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                return Ok(n);
            }
        }
    };
    if size(&mut at)? != base.len() {
        return Err(CorruptDelta("for a base of another size"));
    }
    let target_len = size(&mut at)?;
    if target_len > max_target {
        return Err(CorruptDelta("target larger than its entry allows"));
    }
    // The declared size is not trusted with an allocation: the output grows as it is built.
    let mut out = Vec::with_capacity(target_len.min(base.len() + delta.len()));
    while at < delta.len() {
        let command = delta[at];
        at += 1;
        let piece = if command & 0x80 != 0 {
            let (mut offset, mut len) = (0usize, 0usize);
            for i in 0..7 {
                if command & (1 << i) != 0 {
                    let byte = usize::from(*delta.get(at).ok_or(CorruptDelta("truncated copy"))?);
                    at += 1;
                    if i < 4 {
                        offset |= byte << (8 * i);
                    } else {
                        len |= byte << (8 * (i - 4));
                    }
                }
            }
            if len == 0 {
                len = 0x10000;
            }
            offset
                .checked_add(len)
                .and_then(|end| base.get(offset..end))
                .ok_or(CorruptDelta("copy past the end of the base"))?
        } else if command == 0 {
            return Err(CorruptDelta("reserved instruction 0"));
        } else {
            let end = at + usize::from(command);
            let bytes = delta.get(at..end).ok_or(CorruptDelta("truncated insert"))?;
            at = end;
            bytes
        };
        if out.len() + piece.len() > target_len {
            return Err(CorruptDelta("builds more than its declared size"));
        }
        out.extend_from_slice(piece);
    }
    if out.len() != target_len {
        return Err(CorruptDelta("builds less than its declared size"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::tests::noise;

    fn apply(base: &[u8], delta: &[u8]) -> Vec<u8> {
        super::apply(base, delta, usize::MAX).unwrap()
    }

    fn round_trip(base: &[u8], target: &[u8]) -> Vec<u8> {
        let indexed = Base::new(base.to_vec());
        let delta = encode(&indexed, target, usize::MAX).unwrap();
        assert_eq!(apply(base, &delta), target);
        delta
    }

    #[test]
    fn a_small_edit_is_a_small_delta() {
        let base = noise(100_000, 7);
        let mut target = base.clone();
        target[50_000..50_010].copy_from_slice(b"0123456789");
        let delta = round_trip(&base, &target);
        assert!(delta.len() < 64, "{} bytes", delta.len());
    }

    #[test]
    fn long_copies_are_split_as_git_writes_them() {
        // 300 KiB copied whole: five instructions of at most 0x10000, one of them sized 0.
        let base = noise(300 * 1024, 3);
        let delta = round_trip(&base, &base);
        assert!(delta.len() < 64, "{} bytes", delta.len());
    }

    #[test]
    fn unrelated_content_is_refused_under_a_limit() {
        let base = Base::new(noise(10_000, 1));
        let target = noise(10_000, 2);
        assert!(encode(&base, &target, target.len() / 2).is_none());
        // Without a limit it is all inserts, and still exact.
        let delta = encode(&base, &target, usize::MAX).unwrap();
        assert_eq!(apply(base.data(), &delta), target);
    }

    #[test]
    fn edges_round_trip() {
        for (base, target) in [
            (&b""[..], &b""[..]),
            (b"", b"new content, longer than one window of sixteen"),
            (b"short", b"short"),
            (b"0123456789abcdef", b"0123456789abcdef"),
            (
                b"0123456789abcdef0123456789abcdef",
                b"x0123456789abcdef0123456789abcdefx",
            ),
            (&[0u8; 1000][..], &[0u8; 3000][..]),
        ] {
            round_trip(base, target);
        }
    }

    #[test]
    fn moved_and_shared_blocks_are_copied() {
        // A page and the same frame around other content, as rustdoc writes them.
        let head = noise(4000, 11);
        let tail = noise(3000, 12);
        let base = [&head[..], &noise(500, 13), &tail[..]].concat();
        let target = [&tail[..], &noise(200, 14), &head[..]].concat();
        let delta = round_trip(&base, &target);
        assert!(delta.len() < 300, "{} bytes", delta.len());
    }

    #[test]
    fn corrupt_deltas_are_errors_not_panics() {
        let base = b"0123456789abcdef0123456789abcdef".to_vec();
        let good = encode(&Base::new(base.clone()), b"0123456789abcdefXYZ", usize::MAX).unwrap();
        assert!(super::apply(&base, &good, 1000).is_ok());
        // Every truncation, and a target larger than allowed, fail cleanly.
        for cut in 0..good.len() {
            assert!(
                super::apply(&base, &good[..cut], 1000).is_err(),
                "cut at {cut}"
            );
        }
        assert!(super::apply(&base, &good, 5).is_err());
        // A copy past the base's end; an insert of reserved length 0; a wrong base size.
        assert!(super::apply(&base, &[32, 10, 0x91, 30, 10], 1000).is_err());
        assert!(super::apply(&base, &[32, 1, 0], 1000).is_err());
        assert!(super::apply(&base[1..], &good, 1000).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_as_a_delta_never_panic(
            base in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            delta in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        ) {
            let _ = super::apply(&base, &delta, 1 << 16);
        }

        #[test]
        fn any_pair_round_trips(
            base in proptest::collection::vec(0u8..4, 0..3000),
            target in proptest::collection::vec(0u8..4, 0..3000),
        ) {
            // A 4-letter alphabet makes short repeats and hash collisions common.
            round_trip(&base, &target);
        }

        #[test]
        fn edits_round_trip(
            base in proptest::collection::vec(proptest::num::u8::ANY, 16..5000),
            at in 0usize..5000,
            insert in proptest::collection::vec(proptest::num::u8::ANY, 0..100),
            remove in 0usize..100,
        ) {
            let at = at % base.len();
            let end = (at + remove).min(base.len());
            let target = [&base[..at], &insert[..], &base[end..]].concat();
            round_trip(&base, &target);
        }
    }
}
