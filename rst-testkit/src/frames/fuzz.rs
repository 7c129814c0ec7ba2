//! A seeded mutator for reproducible fuzz loops over the frames of the corpus.

/// A small, fast, seeded pseudo-random generator (xorshift64*) for reproducible fuzz
/// loops; not for anything else.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn byte(&mut self) -> u8 {
        (self.next_u64() >> 32) as u8
    }
}

/// Bytes that steer a parser into its interesting branches.
const INTERESTING: &[u8] = &[
    0x00, 0x01, 0x04, 0x05, 0x06, 0x08, 0x0a, 0x14, 0x1f, 0x20, 0x2b, 0x2c, 0x33, 0x3c, 0x3b, 0x40,
    0x45, 0x4f, 0x50, 0x60, 0x7f, 0x80, 0x81, 0x86, 0x88, 0xa8, 0xdd, 0xf0, 0xff,
];

/// Applies one to four random mutations to `frame`: bit flips, interesting or random
/// bytes (mostly in the first 80 bytes, where the headers are), truncation, extension.
pub fn mutate(rng: &mut Rng, frame: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        let len = frame.len();
        match rng.below(8) {
            0 | 1 if len > 0 => {
                let i = rng.below(len.min(80));
                frame[i] ^= 1 << rng.below(8);
            }
            2 | 3 if len > 0 => {
                let i = rng.below(len.min(80));
                frame[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            4 if len > 0 => {
                let i = rng.below(len);
                frame[i] = rng.byte();
            }
            5 => frame.truncate(rng.below(len + 1)),
            6 => {
                for _ in 0..rng.below(16) {
                    frame.push(rng.byte());
                }
            }
            _ => {
                // Overwrite a 16-bit field: length fields, EtherTypes, fragment offsets.
                if len >= 2 {
                    let i = rng.below(len.min(80) - 1);
                    let v = match rng.below(3) {
                        0 => 0u16,
                        1 => rng.below(80) as u16,
                        _ => rng.next_u64() as u16,
                    };
                    frame[i..i + 2].copy_from_slice(&v.to_be_bytes());
                }
            }
        }
    }
}
