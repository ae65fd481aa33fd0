//! What the unit tests share.

/// A deterministic stream of uniform numbers in [0, 1) (a 64-bit linear congruential generator).
pub(crate) struct Lcg(pub(crate) u64);

impl Lcg {
    pub(crate) fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Five inputs in [-1, 1); the label is an exclusive or of thresholds on x0 and x1 for the first `period` events,
/// on x2 and x3 for the next `period`, and so on alternately.
pub(crate) fn flipping_classes(n: usize, period: usize, seed: u64) -> Vec<(Vec<f64>, lambda_core::schema::Target)> {
    let mut r = Lcg(seed);
    (0..n)
        .map(|i| {
            let x: Vec<f64> = (0..5).map(|_| r.next() * 2.0 - 1.0).collect();
            let yes = if (i / period).is_multiple_of(2) {
                (x[0] > 0.3) != (x[1] > -0.2)
            } else {
                (x[2] > -0.4) != (x[3] > 0.1)
            };
            (x, lambda_core::schema::Target::Class(if yes { "yes" } else { "no" }.into()))
        })
        .collect()
}

/// Three inputs in [-2, 2); a step function of x0 and x2 for the first `period` events, then of x1 and x0, and so
/// on alternately, with uniform noise of width 1.
pub(crate) fn flipping_values(n: usize, period: usize, seed: u64) -> Vec<(Vec<f64>, lambda_core::schema::Target)> {
    let mut r = Lcg(seed);
    (0..n)
        .map(|i| {
            let x: Vec<f64> = (0..3).map(|_| r.next() * 4.0 - 2.0).collect();
            let noise = r.next() - 0.5;
            let y = if (i / period).is_multiple_of(2) {
                (if x[0] > 0.5 { 5.0 } else { -3.0 }) + if x[2] > -1.0 { 2.0 } else { 0.0 }
            } else {
                (if x[1] > -0.5 { -4.0 } else { 4.0 }) + if x[0] > 1.0 { 3.0 } else { 0.0 }
            };
            (x, lambda_core::schema::Target::Value(y + noise))
        })
        .collect()
}

/// The bytes a learner is kept in (postcard, as the state files hold them).
pub(crate) fn encode<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_allocvec(value)
}

/// A learner back from [`encode`]'s bytes; the path is what a state file would name.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    _path: &std::path::Path,
    bytes: &[u8],
) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}
