//! `$(VAR)` expansion in command, args and env values, as the kubelet does it: `$(NAME)` becomes
//! the variable's value when it is defined and stays as written when it is not; `$$` is an
//! escaped `$`. (A port of Kubernetes' `third_party/forked/golang/expansion`.)

/// Expands every `$(NAME)` in `input` for which `lookup` has a value.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let advance = match rest.as_bytes()[0] {
                b'$' => {
                    out.push('$');
                    1
                }
                b'(' => match rest.find(')') {
                    Some(close) => {
                        let name = &rest[1..close];
                        match lookup(name) {
                            Some(value) => out.push_str(&value),
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        close + 1
                    }
                    None => {
                        out.push_str("$(");
                        1
                    }
                },
                _ => {
                    // "$x": both characters kept; x may be multi-byte, so copy it whole.
                    let next = rest.chars().next().map_or(1, char::len_utf8);
                    out.push('$');
                    out.push_str(&rest[..next]);
                    next
                }
            };
            cursor += 1 + advance;
            checkpoint = cursor;
            continue;
        }
        cursor += 1;
    }
    out.push_str(&input[checkpoint.min(input.len())..]);
    out
}

#[cfg(test)]
mod tests {
    use super::expand;

    fn vars(name: &str) -> Option<String> {
        match name {
            "POD_IP" => Some("127.0.0.2".into()),
            "EMPTY" => Some(String::new()),
            "NAME" => Some("w-0".into()),
            _ => None,
        }
    }

    #[test]
    fn defined_variables_are_replaced() {
        assert_eq!(expand("$(POD_IP):50051", vars), "127.0.0.2:50051");
        assert_eq!(expand("/keys/$(NAME)", vars), "/keys/w-0");
        assert_eq!(expand("$(NAME)$(NAME)", vars), "w-0w-0");
        assert_eq!(expand("a$(EMPTY)b", vars), "ab");
    }

    #[test]
    fn undefined_variables_stay_as_written() {
        assert_eq!(expand("$(NOPE)/x", vars), "$(NOPE)/x");
        assert_eq!(expand("$()", vars), "$()");
    }

    #[test]
    fn escapes_and_lone_dollars() {
        assert_eq!(expand("$$(POD_IP)", vars), "$(POD_IP)");
        assert_eq!(expand("$$$(POD_IP)", vars), "$127.0.0.2");
        assert_eq!(expand("cost $5", vars), "cost $5");
        assert_eq!(expand("end$", vars), "end$");
        assert_eq!(expand("$(POD_IP", vars), "$(POD_IP");
        assert_eq!(expand("$HOME", vars), "$HOME");
        assert_eq!(expand("$é$(NAME)", vars), "$éw-0");
        assert_eq!(expand("", vars), "");
    }
}
