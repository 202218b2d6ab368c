//! Peer keys of an in-cluster Contributor: one ed25519 seed per pod, kept in a Secret. Keys are
//! only ever added (a pod that comes back keeps its peer id and its score); the operator knows
//! every public key, so it can tell its own peers from external ones.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use tributary_proto::identity::Identity;

use super::children::MANAGED_BY;

/// Label a user puts on their own key Secret to let one Contributor (the label's value) use it.
/// Without it, anyone allowed to create Contributors could mount any Secret of the namespace
/// into an image of their choice.
pub(super) const PEER_KEYS_LABEL: &str = "tributary.dev/peer-keys";

/// Why a Contributor may not use the Secret its `keySecretRef` names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum KeySecretRefused {
    #[error("key Secret {0:?} does not exist")]
    NotFound(String),
    #[error(
        "key Secret {secret:?} is neither minted by the operator for this Contributor nor labelled {PEER_KEYS_LABEL}: {contributor:?}"
    )]
    NotLabelled { secret: String, contributor: String },
}

impl KeySecretRefused {
    /// The Contributor condition's reason.
    pub(super) fn reason(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "KeySecretNotFound",
            Self::NotLabelled { .. } => "KeySecretNotAllowed",
        }
    }
}

/// Whether the Contributor `contributor` (with uid `uid`) may mount `secret` as its keys: the
/// operator minted it for this Contributor (our label and this Contributor as its owner), or its
/// owner labelled it `tributary.dev/peer-keys: <contributor>`.
pub(super) fn admit_key_secret(
    secret: &Secret,
    contributor: &str,
    uid: Option<&str>,
) -> Result<(), KeySecretRefused> {
    let labels = secret.metadata.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
    if label(PEER_KEYS_LABEL) == Some(contributor) {
        return Ok(());
    }
    let ours = label(MANAGED_BY.0) == Some(MANAGED_BY.1);
    let owned_by_it = uid.is_some_and(|uid| {
        secret
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "Contributor" && o.uid == uid)
    });
    if ours && owned_by_it {
        return Ok(());
    }
    Err(KeySecretRefused::NotLabelled {
        secret: secret.metadata.name.clone().unwrap_or_default(),
        contributor: contributor.to_owned(),
    })
}

/// The keys a Contributor with `pods` needs, given the Secret's current data: every existing
/// entry is kept as it is, missing pods get a fresh key. Returns the full set and whether it grew.
pub(super) fn with_missing(
    existing: &BTreeMap<String, ByteString>,
    pods: &[String],
    mut generate: impl FnMut() -> Identity,
) -> (BTreeMap<String, String>, bool) {
    let mut keys: BTreeMap<String, String> = existing
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    let mut grew = false;
    for pod in pods {
        if !keys.contains_key(pod) {
            keys.insert(pod.clone(), generate().to_hex());
            grew = true;
        }
    }
    (keys, grew)
}

/// The keys of the validators the operator runs, one per pod of `pods`, given the Secret's
/// current data: a pod's well-formed key is kept (a restarted validator keeps its identity), a
/// missing or malformed one is replaced by a fresh key, and the keys of pods beyond `pods` are
/// dropped (a validator scaled away is no longer trusted, and its key is gone). Returns the
/// keys and whether they differ from `existing`.
pub(super) fn validator_keys(
    existing: &BTreeMap<String, ByteString>,
    pods: &[String],
    mut generate: impl FnMut() -> Identity,
) -> (BTreeMap<String, String>, bool) {
    let keys: BTreeMap<String, String> = pods
        .iter()
        .map(|pod| {
            let kept = existing
                .get(pod)
                .and_then(|v| std::str::from_utf8(&v.0).ok())
                .filter(|text| Identity::from_hex(text).is_some());
            let key = kept.map_or_else(|| generate().to_hex(), str::to_owned);
            (pod.clone(), key)
        })
        .collect();
    let unchanged = keys.len() == existing.len()
        && keys
            .iter()
            .all(|(pod, key)| existing.get(pod).is_some_and(|v| v.0 == key.as_bytes()));
    (keys, !unchanged)
}

/// The ed25519 public key (64 hex digits) of each of `pods`'s keys, in pod order.
pub(super) fn public_keys(keys: &BTreeMap<String, String>, pods: &[String]) -> Vec<String> {
    pods.iter()
        .filter_map(|pod| keys.get(pod))
        .filter_map(|text| Identity::from_hex(text))
        .map(|id| hex::encode(id.public_key()))
        .collect()
}

/// Peer id of each of `pods` whose key is present and well-formed, in pod order.
pub(super) fn peer_ids(keys: &BTreeMap<String, String>, pods: &[String]) -> Vec<String> {
    pods.iter()
        .filter_map(|pod| keys.get(pod))
        .filter_map(|text| Identity::from_hex(text))
        .map(|id| id.peer_id())
        .collect()
}

/// Peer ids of the keys in a Secret's data (a user's own key Secret included).
pub(super) fn peer_ids_of_secret(
    data: &BTreeMap<String, ByteString>,
    pods: &[String],
) -> Vec<String> {
    let keys = data
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    peer_ids(&keys, pods)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    use super::*;

    fn secret(labels: &[(&str, &str)], owner_uid: Option<&str>) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some("keys".into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                owner_references: owner_uid.map(|uid| {
                    vec![OwnerReference {
                        kind: "Contributor".into(),
                        uid: uid.into(),
                        ..OwnerReference::default()
                    }]
                }),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        }
    }

    #[test]
    fn a_key_secret_is_admitted_only_when_labelled_for_the_contributor_or_minted_for_it() {
        let admit = |s: &Secret| admit_key_secret(s, "alice", Some("uid-a"));
        assert_eq!(admit(&secret(&[(PEER_KEYS_LABEL, "alice")], None)), Ok(()));
        assert_eq!(admit(&secret(&[MANAGED_BY], Some("uid-a"))), Ok(()));
        let refused = [
            // Any other Secret of the namespace: a database password, a registry token.
            secret(&[], None),
            // Labelled for someone else.
            secret(&[(PEER_KEYS_LABEL, "bob")], None),
            // Minted by the operator, but for another Contributor.
            secret(&[MANAGED_BY], Some("uid-b")),
            // Owned by this Contributor but not one of ours.
            secret(&[], Some("uid-a")),
        ];
        for s in &refused {
            let err = admit(s).unwrap_err();
            assert_eq!(err.reason(), "KeySecretNotAllowed");
            assert!(err.to_string().contains("tributary.dev/peer-keys"), "{err}");
        }
        // Without a uid (not yet created) only the label admits.
        assert!(admit_key_secret(&secret(&[MANAGED_BY], Some("uid-a")), "alice", None).is_err());
    }

    fn pods(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("w-{i}")).collect()
    }

    #[test]
    fn adds_only_missing_keys_and_keeps_existing_ones() {
        let (two, grew) = with_missing(&BTreeMap::new(), &pods(2), Identity::generate);
        assert!(grew);
        assert_eq!(two.len(), 2);
        let data: BTreeMap<String, ByteString> = two
            .iter()
            .map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec())))
            .collect();
        let (four, grew) = with_missing(&data, &pods(4), Identity::generate);
        assert!(grew);
        assert_eq!(four.len(), 4);
        for (pod, key) in &two {
            assert_eq!(&four[pod], key, "existing key of {pod} must not change");
        }
        // Scaling down keeps every key: a pod that returns keeps its identity.
        let data4: BTreeMap<String, ByteString> = four
            .iter()
            .map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec())))
            .collect();
        let (one, grew) = with_missing(&data4, &pods(1), Identity::generate);
        assert!(!grew);
        assert_eq!(one, four);
        let ids = peer_ids(&four, &pods(4));
        assert_eq!(ids.len(), 4);
        assert_eq!(peer_ids(&four, &pods(1)), ids[..1].to_vec());
    }

    fn data(keys: &BTreeMap<String, String>) -> BTreeMap<String, ByteString> {
        keys.iter()
            .map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn validator_keys_follow_the_replicas_and_keep_each_pods_key() {
        let (two, changed) = validator_keys(&BTreeMap::new(), &pods(2), Identity::generate);
        assert!(changed);
        assert_eq!(two.keys().collect::<Vec<_>>(), ["w-0", "w-1"]);
        assert_ne!(two["w-0"], two["w-1"]);
        // Nothing to do when the Secret already holds exactly these keys.
        let (same, changed) = validator_keys(&data(&two), &pods(2), || unreachable!());
        assert!(!changed);
        assert_eq!(same, two);
        // Scaling up keeps the existing keys and mints the new pod's.
        let (three, changed) = validator_keys(&data(&two), &pods(3), Identity::generate);
        assert!(changed);
        assert_eq!(
            (three["w-0"].as_str(), three["w-1"].as_str()),
            (two["w-0"].as_str(), two["w-1"].as_str())
        );
        // Scaling down drops the removed pod's key: it is trusted no more.
        let (one, changed) = validator_keys(&data(&three), &pods(1), || unreachable!());
        assert!(changed);
        assert_eq!(
            one,
            BTreeMap::from([("w-0".to_owned(), two["w-0"].clone())])
        );
        let (none, changed) = validator_keys(&data(&one), &[], || unreachable!());
        assert!(changed && none.is_empty());
    }

    #[test]
    fn a_malformed_validator_key_is_replaced_and_public_keys_are_hex() {
        let fresh = Identity::from_seed([9; 32]);
        let existing = BTreeMap::from([("w-0".to_owned(), ByteString(b"not a key".to_vec()))]);
        let (keys, changed) = validator_keys(&existing, &pods(1), || Identity::from_seed([9; 32]));
        assert!(changed);
        assert_eq!(keys["w-0"], fresh.to_hex());
        let public = public_keys(&keys, &pods(1));
        assert_eq!(public, [hex::encode(fresh.public_key())]);
        assert!(
            public.iter().all(|k| tributary_crds::is_public_key(k)),
            "{public:?}"
        );
    }

    #[test]
    fn malformed_keys_give_no_peer_id() {
        let data = BTreeMap::from([
            ("w-0".to_owned(), ByteString(b"not hex".to_vec())),
            (
                "w-1".to_owned(),
                ByteString(Identity::from_seed([7; 32]).to_hex().into_bytes()),
            ),
        ]);
        let ids = peer_ids_of_secret(&data, &pods(2));
        assert_eq!(ids, vec![Identity::from_seed([7; 32]).peer_id()]);
    }
}
