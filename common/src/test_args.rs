//! Command-line settings for services started by tests: test defaults that a test's own
//! arguments replace.

/// `defaults` as `--flag value` pairs, each left out when `extra` sets that flag itself (a
/// `--jwt-keys` ring replaces a default `--jwt-secret`: the two cannot both be set), then
/// `extra`.
pub fn with_defaults<'a>(defaults: &[(&'a str, &'a str)], extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = Vec::new();
    for (flag, value) in defaults {
        let replaced =
            extra.contains(flag) || (*flag == "--jwt-secret" && extra.contains(&"--jwt-keys"));
        if !replaced {
            args.extend([*flag, *value]);
        }
    }
    args.extend_from_slice(extra);
    args
}

#[cfg(test)]
mod tests {
    use super::with_defaults;

    #[test]
    fn a_test_argument_replaces_its_default() {
        let defaults = [("--http-addr", "127.0.0.1:0"), ("--jwt-secret", "k")];
        assert_eq!(
            with_defaults(&defaults, &["--http-addr", "127.0.0.1:9"]),
            ["--jwt-secret", "k", "--http-addr", "127.0.0.1:9"]
        );
        assert_eq!(
            with_defaults(&defaults, &["--jwt-keys", "a:b"]),
            ["--http-addr", "127.0.0.1:0", "--jwt-keys", "a:b"]
        );
    }
}
