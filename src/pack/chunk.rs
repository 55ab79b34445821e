//! Content-defined cut points for the compressor's segments.
//!
//! A segment ends where a gear hash of the last 64 bytes has its top `bits` bits all zero,
//! but never before `min` bytes and always at `max` bytes. The hash depends only on the
//! bytes, so the cut points are a pure function of the uncompressed stream: the same archive
//! gives the same segments, and after an insertion or a change the cuts fall back into step
//! at the first hash hit after the changed region (so later segments are the same bytes
//! again, which is what lets the segment cache reuse them). This is the gear rolling hash of
//! FastCDC (Xia et al., USENIX ATC 2016) without its normalisation.

/// 256 fixed pseudo-random 64-bit values, one per byte value (splitmix64 of 0..256).
/// Changing them changes every cut point and so every cache key's segment: never do it
/// without bumping the cache format.
const GEAR: [u64; 256] = gear_table();

const fn gear_table() -> [u64; 256] {
    let mut t = [0u64; 256];
    let mut state: u64 = 0x7863_6174_2d69_6d67; // "xcat-img"
    let mut i = 0;
    while i < 256 {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        t[i] = z ^ (z >> 31);
        i += 1;
    }
    t
}

/// Bytes of history the hash depends on (one bit shifted out per byte).
const WINDOW: usize = 64;

/// Segment size rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// No cut before this many bytes.
    pub min: usize,
    /// Cut where the top `bits` bits of the hash are zero: on average every `2^bits` bytes
    /// after `min`.
    pub bits: u32,
    /// Always cut here.
    pub max: usize,
}

/// Streaming cut finder: feed it the stream in any pieces; it answers where the current
/// segment ends.
#[derive(Debug, Clone)]
pub struct Chunker {
    sizes: Sizes,
    /// Bytes in the current segment so far.
    len: usize,
    hash: u64,
}

impl Chunker {
    /// A chunker at the start of a stream. `min` at least the hash window, `max >= min`.
    pub fn new(sizes: Sizes) -> Chunker {
        let min = sizes.min.max(WINDOW);
        Chunker {
            sizes: Sizes {
                min,
                bits: sizes.bits.clamp(1, 63),
                max: sizes.max.max(min),
            },
            len: 0,
            hash: 0,
        }
    }

    /// How many bytes of `data` belong to the current segment: `Some(n)` when the segment
    /// ends after `data[..n]` (the chunker then starts the next segment), `None` when all of
    /// `data` belongs to it and it goes on.
    pub fn cut(&mut self, data: &[u8]) -> Option<usize> {
        let Sizes { min, bits, max } = self.sizes;
        let shift = 64 - bits;
        let mut i = 0;
        // Bytes before `min - WINDOW` cannot influence a hash checked at or after `min`.
        let skip_to = min - WINDOW;
        if self.len < skip_to {
            let n = (skip_to - self.len).min(data.len());
            self.len += n;
            i = n;
        }
        let mut hash = self.hash;
        let mut len = self.len;
        while i < data.len() {
            hash = (hash << 1).wrapping_add(GEAR[data[i] as usize]);
            len += 1;
            i += 1;
            if len >= max || (len >= min && hash >> shift == 0) {
                self.len = 0;
                self.hash = 0;
                return Some(i);
            }
        }
        self.len = len;
        self.hash = hash;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// Segment end offsets of `data` fed in pieces of `piece` bytes.
    fn ends(data: &[u8], sizes: Sizes, piece: usize) -> Vec<usize> {
        let mut c = Chunker::new(sizes);
        let mut out = Vec::new();
        let mut base = 0;
        for chunk in data.chunks(piece) {
            let mut rest = chunk;
            let mut at = base;
            while let Some(n) = c.cut(rest) {
                at += n;
                out.push(at);
                rest = &rest[n..];
            }
            base += chunk.len();
        }
        out
    }

    const S: Sizes = Sizes {
        min: 4096,
        bits: 12,
        max: 32768,
    };

    #[test]
    fn cuts_do_not_depend_on_how_the_stream_is_fed() {
        let data = noise(1 << 20, 7);
        let reference = ends(&data, S, data.len());
        assert!(reference.len() > 50, "{}", reference.len());
        for piece in [1, 63, 4096, 100_000] {
            assert_eq!(ends(&data, S, piece), reference, "piece {piece}");
        }
        let mut prev = 0;
        for &e in &reference {
            assert!((S.min..=S.max).contains(&(e - prev)), "{}", e - prev);
            prev = e;
        }
    }

    #[test]
    fn cuts_resynchronise_after_an_insertion() {
        let data = noise(1 << 20, 9);
        let a = ends(&data, S, 8192);
        let mut changed = data.clone();
        changed.splice(300_000..300_010, b"inserted bytes!".iter().copied());
        let b = ends(&changed, S, 8192);
        let shift = 5usize;
        let before: Vec<_> = a.iter().filter(|&&e| e < 300_000).collect();
        assert_eq!(
            before,
            b.iter().filter(|&&e| e < 300_000).collect::<Vec<_>>()
        );
        // Well after the change, the same cuts, shifted by the inserted length.
        let after_a: Vec<usize> = a
            .iter()
            .filter(|&&e| e > 400_000)
            .map(|&e| e + shift)
            .collect();
        let after_b: Vec<usize> = b
            .iter()
            .filter(|&&e| e > 400_000 + shift)
            .copied()
            .collect();
        assert_eq!(after_a, after_b);
    }

    #[test]
    fn constant_input_cuts_at_a_fixed_size() {
        let zeros = vec![0u8; 200_000];
        let e = ends(&zeros, S, 10_000);
        let step = e[0];
        assert!(e.windows(2).all(|w| w[1] - w[0] == step));
    }
}
