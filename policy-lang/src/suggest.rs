//! "Did you mean ...?" suggestions by edit distance.

/// The edit distance between two strings, counted in characters: insertions, deletions,
/// substitutions and transpositions of neighbours each cost one (optimal string alignment).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for (i, row) in d.chunks_mut(width).enumerate() {
        row[0] = i;
    }
    for (j, cell) in d.iter_mut().take(width).enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = v;
        }
    }
    d[a.len() * width + b.len()]
}

/// The candidate closest to `name`, if it is close enough to be a likely misspelling.
///
/// Close enough means at most one edit for short names and a third of the length for
/// longer ones. Ties go to the earliest candidate, so the answer is deterministic.
pub fn best_match<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    let mut best: Option<(usize, &'a str)> = None;
    for c in candidates {
        let d = edit_distance(&name.to_ascii_lowercase(), &c.to_ascii_lowercase());
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "ab"), 2);
        assert_eq!(edit_distance("wrold", "world"), 1);
    }

    #[test]
    fn suggests_close_names_only() {
        let c = ["ipv4.src", "ipv4.dst", "ipv6.src"];
        assert_eq!(best_match("ipv4.srcc", c), Some("ipv4.src"));
        assert_eq!(best_match("ipv4.sr", c), Some("ipv4.src"));
        assert_eq!(best_match("vxlan", c), None);
    }
}
