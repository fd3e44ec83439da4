//! The few numeric conversions the report needs, in one place: counts and
//! durations here are far below 2^52, and rates are positive.

/// A count as a float (exact below 2^53).
#[allow(clippy::cast_precision_loss)]
pub fn to_f64(n: u64) -> f64 {
    n as f64
}

/// A non-negative float rounded to the nearest integer (negative or NaN → 0).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub fn to_u64(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 { x.round() as u64 } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(to_u64(2.6), 3);
        assert_eq!(to_u64(-1.0), 0);
        assert_eq!(to_u64(f64::NAN), 0);
        assert!((to_f64(1000) - 1000.0).abs() < f64::EPSILON);
    }
}
