//! Peer keys of an in-cluster Contributor: one ed25519 seed per pod, kept in a Secret. Keys are
//! only ever added (a pod that comes back keeps its peer id and its score); the operator knows
//! every public key, so it can tell its own peers from external ones.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use tributary_proto::identity::Identity;

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
    use super::*;

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
