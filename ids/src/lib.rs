//! Region codes (docs/ARCHITECTURE.md §2): the one definition of what names
//! a region. The CRDs put [`REGION_CODE_PATTERN`] in their CEL rules, and
//! local mode, the operator and every node check with [`is_region_code`];
//! a test keeps the two in agreement.

/// Longest region code: a region code is a DNS label, within a Service name.
pub const REGION_CODE_MAX_LEN: usize = 32;

/// The region code pattern, as the CRDs' CEL rules use it.
pub const REGION_CODE_PATTERN: &str = "^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$";

/// Whether `code` is a region code: 1 to 32 lowercase letters, digits and
/// '-', starting and ending with a letter or digit.
pub fn is_region_code(code: &str) -> bool {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match code.as_bytes() {
        [] => false,
        b if b.len() > REGION_CODE_MAX_LEN => false,
        [first, .., last] if !alnum(*first) || !alnum(*last) => false,
        [only] => alnum(*only),
        b => b.iter().all(|&c| alnum(c) || c == b'-'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_codes_are_dns_labels() {
        for ok in ["eu", "a", "0", "us-east-1", &"a".repeat(32)] {
            assert!(is_region_code(ok), "{ok:?} should be a region code");
        }
        let long = "a".repeat(33);
        for bad in [
            "", "EU", "-eu", "eu-", "-", "e_u", "eu.west", "ü", "e u", &long,
        ] {
            assert!(!is_region_code(bad), "{bad:?} should not be a region code");
        }
    }

    /// The check and the CEL pattern agree on every string of up to three
    /// characters over an alphabet with each kind of character, and around
    /// the length limit.
    #[test]
    fn the_check_and_the_pattern_agree() {
        let pattern = regex::Regex::new(REGION_CODE_PATTERN).unwrap();
        let alphabet = ['a', 'z', '0', '9', '-', 'A', '_', '.'];
        let mut candidates = vec![String::new()];
        for _ in 0..3 {
            let longer: Vec<String> = candidates
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            candidates.extend(longer);
        }
        for n in [31, 32, 33] {
            candidates.push("a".repeat(n));
            candidates.push(format!("a{}a", "-".repeat(n - 2)));
            candidates.push(format!("{}-", "a".repeat(n - 1)));
        }
        for s in &candidates {
            assert_eq!(is_region_code(s), pattern.is_match(s), "{s:?}");
        }
    }
}
