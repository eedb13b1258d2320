//! Expanding target patterns into the test targets `bazel test` would run, with `bazel query`.

/// The query expression for the test targets `bazel test PATTERNS` runs: the tests the positive
/// patterns name (a wildcard such as `//...` or `:all` leaves out `manual` tests, as Bazel does;
/// a test named explicitly runs even when manual), less whatever the negative patterns match.
pub fn test_targets_expression(patterns: &[String]) -> Option<String> {
    let mut positive = Vec::new();
    let mut negative = Vec::new();
    for pattern in patterns {
        match pattern.strip_prefix('-') {
            Some(subtracted) => negative.push(quote(subtracted)),
            None if is_wildcard(pattern) => {
                let tests = format!("tests({})", quote(pattern));
                positive.push(format!(
                    "({tests} except attr(tags, \"\\bmanual\\b\", {tests}))"
                ));
            }
            None => positive.push(format!("tests({})", quote(pattern))),
        }
    }
    if positive.is_empty() {
        return None;
    }
    let mut expression = positive.join(" + ");
    for subtracted in negative {
        expression = format!("({expression}) except {subtracted}");
    }
    Some(expression)
}

/// `//...`, `//pkg:all`, `//pkg:*`, `//pkg:all-targets`: patterns that expand, rather than name.
fn is_wildcard(pattern: &str) -> bool {
    pattern.ends_with("...")
        || pattern.ends_with(":all")
        || pattern.ends_with(":*")
        || pattern.ends_with(":all-targets")
}

/// A query word in double quotes, so labels with unusual characters stay one word.
fn quote(pattern: &str) -> String {
    format!("\"{}\"", pattern.replace('"', ""))
}

/// The labels in `bazel query --output=label` output, sorted and deduplicated.
pub fn parse_labels(stdout: &str) -> Vec<String> {
    let mut labels: Vec<String> = stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    labels.sort();
    labels.dedup();
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expression(patterns: &[&str]) -> Option<String> {
        test_targets_expression(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn wildcards_leave_out_manual_tests_and_negatives_subtract() {
        assert_eq!(
            expression(&["//..."]).unwrap(),
            r#"(tests("//...") except attr(tags, "\bmanual\b", tests("//...")))"#
        );
        assert_eq!(expression(&["//a:t"]).unwrap(), r#"tests("//a:t")"#);
        assert_eq!(
            expression(&["//a:t", "//b:all", "-//b:slow"]).unwrap(),
            r#"(tests("//a:t") + (tests("//b:all") except attr(tags, "\bmanual\b", tests("//b:all")))) except "//b:slow""#
        );
        assert_eq!(expression(&["-//x/..."]), None);
        assert_eq!(expression(&[]), None);
    }

    #[test]
    fn labels_are_sorted_and_unique() {
        assert_eq!(parse_labels("//b:t\n//a:t\n\n//b:t\n"), ["//a:t", "//b:t"]);
    }
}
