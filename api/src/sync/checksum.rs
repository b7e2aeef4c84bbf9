//! The live-set digest carried by every pull: `count` alone cannot tell two different sets
//! of the same size apart, and a client must be able to recompute the value on its side.
//!
//! Definition (also in docs/SYNC.md): for each live project, `sha256("<id>:<seq>")` where
//! `id` is the lowercase hyphenated UUID and `seq` the decimal seq of the row's last
//! change; the checksum is the bytewise XOR of those digests, hex-encoded (64 zeros for
//! an empty set). XOR makes it order-independent and incremental: a write removes the
//! old row's digest and adds the new one, so the server keeps it in the user's
//! `sync_state` row instead of rescanning the set on every pull.

use sha2::{Digest as _, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checksum([u8; 32]);

impl Checksum {
    pub fn row(id: &str, seq: i64) -> Checksum {
        let mut h = Sha256::new();
        h.update(id.as_bytes());
        h.update(b":");
        h.update(seq.to_string().as_bytes());
        Checksum(h.finalize().into())
    }

    /// Add or remove one row (XOR is its own inverse).
    pub fn toggle(&mut self, other: Checksum) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a ^= b;
        }
    }

    pub fn of<'a>(rows: impl IntoIterator<Item = (&'a str, i64)>) -> Checksum {
        let mut sum = Checksum::default();
        for (id, seq) in rows {
            sum.toggle(Checksum::row(id, seq));
        }
        sum
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    /// A stored value that does not decode is treated as the empty digest; the
    /// `sync_state` row is only ever written by this module's `to_hex`.
    pub fn from_hex(s: &str) -> Checksum {
        let mut out = [0u8; 32];
        if hex::decode_to_slice(s, &mut out).is_err() {
            return Checksum::default();
        }
        Checksum(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_order_independent_and_incremental() {
        let a = Checksum::of([("a", 1), ("b", 2), ("c", 3)]);
        let b = Checksum::of([("c", 3), ("a", 1), ("b", 2)]);
        assert_eq!(a, b);
        let mut c = a;
        c.toggle(Checksum::row("b", 2));
        assert_eq!(c, Checksum::of([("a", 1), ("c", 3)]));
        assert_eq!(Checksum::of([]).to_hex(), "0".repeat(64));
        assert_eq!(Checksum::from_hex(&a.to_hex()), a);
    }
}
