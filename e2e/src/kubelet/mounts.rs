//! Volume mounts without a mount namespace: a path in an arg or env value that starts with a
//! container mountPath is rewritten to the local directory that stands in for the volume.

use std::path::{Path, PathBuf};

/// Characters after which a path may start (start of a value, `--flag=/path`, shell words).
const BEFORE: &[u8] = b"= \t\n\"':,;(";
/// Characters that may follow a mount path for it to be a whole path component.
const AFTER: &[u8] = b"/ \t\n\"':,;)";

/// Container mount paths and the local paths that replace them, longest mount path first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MountTable {
    entries: Vec<(String, PathBuf)>,
}

impl MountTable {
    pub fn new(entries: impl IntoIterator<Item = (String, PathBuf)>) -> Self {
        let mut entries: Vec<(String, PathBuf)> = entries
            .into_iter()
            .map(|(mount, local)| (mount.trim_end_matches('/').to_owned(), local))
            .filter(|(mount, _)| mount.starts_with('/'))
            .collect();
        entries.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Self { entries }
    }

    /// Rewrites every mount-path prefix of a path that starts a value or a word in it.
    pub fn rewrite(&self, value: &str) -> String {
        let bytes = value.as_bytes();
        let mut out = String::with_capacity(value.len());
        let mut copied = 0;
        let mut pos = 0;
        while pos < bytes.len() {
            let starts_word = pos == 0 || BEFORE.contains(&bytes[pos - 1]);
            if bytes[pos] == b'/'
                && starts_word
                && let Some((mount, local)) = self.matching(&value[pos..])
            {
                out.push_str(&value[copied..pos]);
                out.push_str(&local.to_string_lossy());
                pos += mount.len();
                copied = pos;
                continue;
            }
            pos += 1;
        }
        out.push_str(&value[copied..]);
        out
    }

    fn matching(&self, rest: &str) -> Option<(&str, &Path)> {
        self.entries.iter().find_map(|(mount, local)| {
            let after = rest.strip_prefix(mount.as_str())?;
            let whole = after.is_empty() || AFTER.contains(&after.as_bytes()[0]);
            whole.then_some((mount.as_str(), local.as_path()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> MountTable {
        MountTable::new([
            (
                "/etc/tributary".to_owned(),
                PathBuf::from("/k/p/volumes/run"),
            ),
            (
                "/var/lib/tributary/".to_owned(),
                PathBuf::from("/k/pvc/ns_data"),
            ),
            (
                "/var/lib/tributary/cache".to_owned(),
                PathBuf::from("/k/p/volumes/cache"),
            ),
            ("/".to_owned(), PathBuf::from("/never")),
        ])
    }

    #[test]
    fn prefixes_are_rewritten_on_component_boundaries() {
        let t = table();
        assert_eq!(
            t.rewrite("/etc/tributary/run.yaml"),
            "/k/p/volumes/run/run.yaml"
        );
        assert_eq!(t.rewrite("/etc/tributary"), "/k/p/volumes/run");
        assert_eq!(t.rewrite("/var/lib/tributary"), "/k/pvc/ns_data");
        assert_eq!(
            t.rewrite("/etc/tributary-other/x"),
            "/etc/tributary-other/x"
        );
        assert_eq!(t.rewrite("/etc/tributaryx"), "/etc/tributaryx");
        assert_eq!(
            t.rewrite("relative/etc/tributary"),
            "relative/etc/tributary"
        );
        assert_eq!(t.rewrite("/usr/bin/env"), "/usr/bin/env");
    }

    #[test]
    fn longest_mount_wins() {
        let t = table();
        assert_eq!(
            t.rewrite("/var/lib/tributary/cache/a"),
            "/k/p/volumes/cache/a"
        );
        assert_eq!(
            t.rewrite("/var/lib/tributary/store"),
            "/k/pvc/ns_data/store"
        );
    }

    #[test]
    fn paths_inside_flags_and_scripts_are_rewritten() {
        let t = table();
        assert_eq!(
            t.rewrite("--run=/etc/tributary/run.yaml"),
            "--run=/k/p/volumes/run/run.yaml"
        );
        assert_eq!(
            t.rewrite("cat /etc/tributary/a '/var/lib/tributary' > out"),
            "cat /k/p/volumes/run/a '/k/pvc/ns_data' > out"
        );
    }

    #[test]
    fn non_ascii_text_is_kept() {
        let t = table();
        assert_eq!(t.rewrite("é /etc/tributary ü"), "é /k/p/volumes/run ü");
    }
}
