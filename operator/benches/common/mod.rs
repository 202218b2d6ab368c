//! What the operator's bench binaries share.

/// `name` from the environment, parsed, or `default` when unset; a value that does not parse
/// stops the bench (a mistyped knob must not silently measure the default).
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} does not parse")),
        Err(_) => default,
    }
}
