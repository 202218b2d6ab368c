//! Reading a TrainingRun from a local manifest file (`--run`), strictly: a field the types do not
//! know — usually a typo — is an error that names its path, not a setting silently ignored.
//! The types themselves stay tolerant, for objects read back from the API server.

use crate::{Error, Result, TrainingRun};

/// A TrainingRun from the YAML of a manifest; unknown fields are refused with their paths.
pub fn training_run_from_yaml(text: &str) -> Result<TrainingRun> {
    let mut unknown = Vec::new();
    let run = serde_ignored::deserialize(serde_yaml::Deserializer::from_str(text), |path| {
        unknown.push(path.to_string())
    })?;
    if unknown.is_empty() {
        Ok(run)
    } else {
        Err(Error::UnknownFields(unknown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = "apiVersion: tributary.dev/v1alpha1
kind: TrainingRun
metadata:
  name: r
spec:
  model:
    preset: tiny
  data:
    embedded:
      seed: 3
  participation:
    minPeers: 1
";

    #[test]
    fn a_known_manifest_reads() {
        let run = training_run_from_yaml(RUN).unwrap();
        assert_eq!(run.spec.participation.min_peers, 1);
    }

    #[test]
    fn unknown_fields_are_refused_with_their_paths() {
        let typo = RUN.replace("minPeers", "minPeer");
        let err = training_run_from_yaml(&typo).unwrap_err();
        assert!(matches!(&err, Error::UnknownFields(p) if p == &["spec.participation.minPeer"]));
        assert!(
            err.to_string().contains("spec.participation.minPeer"),
            "{err}"
        );

        let several = RUN
            .replace("  model:", "  modle:\n    preset: tiny\n  model:")
            .replace("      seed: 3", "      seed: 3\n      sede: 4");
        let Err(Error::UnknownFields(paths)) = training_run_from_yaml(&several) else {
            panic!("accepted")
        };
        assert_eq!(paths, ["spec.modle", "spec.data.embedded.sede"]);
        let meta = RUN.replace("  name: r", "  name: r\n  nmae: s");
        assert!(training_run_from_yaml(&meta).is_err());
    }

    #[test]
    fn type_errors_name_the_field_too() {
        let wrong = RUN.replace("minPeers: 1", "minPeers: many");
        let err = training_run_from_yaml(&wrong).unwrap_err().to_string();
        assert!(err.contains("spec.participation.minPeers"), "{err}");
    }
}
