//! Peer identity: an ed25519 key per peer, the peer id derived from its public key, and the
//! canonical byte strings that peers sign (docs/protocol.md, "Signatures").

use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::v1alpha1::{PeerScore, UpdateHeader};

/// Why an identity could not be loaded or a signature does not hold.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("key file {path}: expected 64 hex digits (an ed25519 secret seed)")]
    BadKeyFile { path: String },
    #[error("public key must be 32 bytes of a valid ed25519 point")]
    BadPublicKey,
    #[error("signature must be 64 bytes")]
    BadSignatureLength,
    #[error("signature does not verify")]
    BadSignature,
}

/// A peer's signing key. The key file holds the 32-byte secret seed as 64 hex digits.
pub struct Identity {
    key: SigningKey,
}

impl Identity {
    /// A fresh key from the operating system's randomness.
    pub fn generate() -> Self {
        Self {
            key: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// A key from a 32-byte seed (tests and deterministic fixtures).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| IdentityError::Io {
            path: shown.clone(),
            source,
        })?;
        Self::from_hex(&text).ok_or(IdentityError::BadKeyFile { path: shown })
    }

    /// A key from the text of a key file: 64 hex digits of seed, surrounding whitespace allowed.
    pub fn from_hex(text: &str) -> Option<Self> {
        let seed: [u8; 32] = hex::decode(text.trim()).ok()?.try_into().ok()?;
        Some(Self::from_seed(seed))
    }

    /// The key file's text (64 hex digits of seed and a newline), as `save` writes it.
    pub fn to_hex(&self) -> String {
        format!("{}\n", hex::encode(self.key.to_bytes()))
    }

    /// Writes the key file (mode 0600 on Unix) through a temporary file, so a crash never
    /// leaves half a key; refuses to overwrite an existing key.
    pub fn save(&self, path: &Path) -> Result<(), IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.display().to_string(),
            source,
        };
        if path.exists() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "refusing to overwrite an existing key",
            )));
        }
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp).map_err(io)?;
            f.write_all(self.to_hex().as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    pub fn peer_id(&self) -> String {
        peer_id(&self.public_key())
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.key.sign(message).to_bytes().to_vec()
    }
}

/// The peer id of a public key: `p` and the first 16 bytes of its SHA-256, in hex. Stable,
/// short enough for logs and Kubernetes labels, and bound to the key (a peer cannot claim an
/// id without the key that hashes to it).
pub fn peer_id(public_key: &[u8; 32]) -> String {
    let digest = Sha256::digest(public_key);
    format!("p{}", hex::encode(&digest[..16]))
}

/// Checks `signature` over `message` by `public_key`; a malformed key or signature is an error,
/// never a panic.
pub fn verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> Result<(), IdentityError> {
    let key: [u8; 32] = public_key
        .try_into()
        .map_err(|_| IdentityError::BadPublicKey)?;
    let key = VerifyingKey::from_bytes(&key).map_err(|_| IdentityError::BadPublicKey)?;
    let sig: [u8; 64] = signature
        .try_into()
        .map_err(|_| IdentityError::BadSignatureLength)?;
    key.verify(message, &Signature::from_bytes(&sig))
        .map_err(|_| IdentityError::BadSignature)
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Canonical encoding: a domain tag, then each field as u32-LE length + bytes (strings,
/// byte strings) or 8 bytes LE (integers). Length prefixes make the encoding injective.
struct Canonical(Vec<u8>);

impl Canonical {
    fn new(tag: &str) -> Self {
        let mut c = Self(Vec::with_capacity(128));
        c.bytes(tag.as_bytes());
        c
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.0.extend_from_slice(b);
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

/// What a joining peer signs.
pub fn join_message(run_id: &str, public_key: &[u8], unix_millis: u64) -> Vec<u8> {
    Canonical::new("tributary-join-v1")
        .bytes(run_id.as_bytes())
        .bytes(public_key)
        .u64(unix_millis)
        .finish()
}

/// What a peer signs for an update: every field of its header but the signature (the run, the
/// round, itself, the version of θ it trained from, the codec settings, the payload's size and
/// hash, its reported loss and tokens), so nothing in a header can be changed or replayed into
/// another run, round or codec without the key.
pub fn update_message(h: &UpdateHeader) -> Vec<u8> {
    let codec = h.codec.unwrap_or_default();
    let version = h.version.unwrap_or_default();
    Canonical::new("tributary-update-v2")
        .u64(u64::from(version.major))
        .u64(u64::from(version.minor))
        .bytes(h.run_id.as_bytes())
        .u64(h.round)
        .bytes(h.peer_id.as_bytes())
        .u64(h.model_version)
        .u64(u64::from(codec.chunk_side))
        .u64(u64::from(codec.top_k))
        .u64(u64::from(codec.bits))
        .u64(codec.quantizer as u64)
        .u64(u64::from(codec.codec_format_version))
        .u64(h.payload_bytes)
        .bytes(&h.payload_sha256)
        .u64(h.inner_loss.to_bits())
        .u64(h.tokens)
        .finish()
}

/// What a validator signs to ask for a round's candidates (`peer` empty) or for one of them:
/// bound to the run, the round, the validator's key and a time, so a captured request cannot be
/// used for another round or long after.
pub fn candidates_message(
    run_id: &str,
    round: u64,
    public_key: &[u8],
    peer: &str,
    unix_millis: u64,
) -> Vec<u8> {
    Canonical::new("tributary-candidates-v1")
        .bytes(run_id.as_bytes())
        .u64(round)
        .bytes(public_key)
        .bytes(peer.as_bytes())
        .u64(unix_millis)
        .finish()
}

/// What a validator signs for its scores of a round: every field of every score.
pub fn scores_message(
    run_id: &str,
    round: u64,
    public_key: &[u8],
    unix_millis: u64,
    scores: &[PeerScore],
) -> Vec<u8> {
    let mut c = Canonical::new("tributary-scores-v1");
    c.bytes(run_id.as_bytes())
        .u64(round)
        .bytes(public_key)
        .u64(unix_millis)
        .u64(scores.len() as u64);
    for s in scores {
        c.bytes(s.peer_id.as_bytes())
            .u64(s.score.to_bits())
            .u64(s.loss_improvement_own.to_bits())
            .u64(s.loss_improvement_random.to_bits());
    }
    c.finish()
}

/// What the checkpoint writer signs.
pub fn checkpoint_message(run_id: &str, round: u64, sha256: &[u8]) -> Vec<u8> {
    Canonical::new("tributary-checkpoint-v1")
        .bytes(run_id.as_bytes())
        .u64(round)
        .bytes(sha256)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(peer_id: String) -> UpdateHeader {
        UpdateHeader {
            version: Some(crate::PROTOCOL_VERSION),
            run_id: "run".into(),
            round: 4,
            peer_id,
            codec: Some(crate::v1alpha1::CodecParams {
                chunk_side: 64,
                top_k: 64,
                bits: 2,
                quantizer: crate::v1alpha1::Quantizer::Production.into(),
                codec_format_version: 1,
            }),
            payload_bytes: 100,
            payload_sha256: vec![9; 32],
            inner_loss: 3.5,
            tokens: 4096,
            signature: Vec::new(),
            model_version: 4,
        }
    }

    #[test]
    fn a_signature_verifies_only_for_its_exact_header() {
        let id = Identity::from_seed([3; 32]);
        let h = header(id.peer_id());
        let msg = update_message(&h);
        let sig = id.sign(&msg);
        assert!(verify(&id.public_key(), &msg, &sig).is_ok());
        // The signature field itself is not signed.
        let signed = UpdateHeader {
            signature: sig.clone(),
            ..h.clone()
        };
        assert_eq!(update_message(&signed), msg);
        let codec = |f: fn(&mut crate::v1alpha1::CodecParams)| {
            let mut h = h.clone();
            if let Some(c) = h.codec.as_mut() {
                f(c);
            }
            h
        };
        for other in [
            UpdateHeader {
                run_id: "run2".into(),
                ..h.clone()
            },
            UpdateHeader {
                round: 5,
                ..h.clone()
            },
            UpdateHeader {
                peer_id: "someone".into(),
                ..h.clone()
            },
            UpdateHeader {
                model_version: 3,
                ..h.clone()
            },
            UpdateHeader {
                payload_bytes: 101,
                ..h.clone()
            },
            UpdateHeader {
                payload_sha256: vec![8; 32],
                ..h.clone()
            },
            UpdateHeader {
                inner_loss: f64::NAN,
                ..h.clone()
            },
            UpdateHeader {
                tokens: 1,
                ..h.clone()
            },
            UpdateHeader {
                version: None,
                ..h.clone()
            },
            codec(|c| c.top_k = 32),
            codec(|c| c.chunk_side = 32),
            codec(|c| c.bits = 4),
            codec(|c| c.quantizer = crate::v1alpha1::Quantizer::Balanced.into()),
            codec(|c| c.codec_format_version = 2),
        ] {
            assert!(matches!(
                verify(&id.public_key(), &update_message(&other), &sig),
                Err(IdentityError::BadSignature)
            ));
        }
        let stranger = Identity::from_seed([4; 32]);
        assert!(verify(&stranger.public_key(), &msg, &sig).is_err());
        assert!(matches!(
            verify(&id.public_key(), &msg, &sig[..63]),
            Err(IdentityError::BadSignatureLength)
        ));
        assert!(matches!(
            verify(&[1; 5], &msg, &sig),
            Err(IdentityError::BadPublicKey)
        ));
    }

    #[test]
    fn peer_ids_are_stable_and_distinct() {
        let a = Identity::from_seed([1; 32]);
        let b = Identity::from_seed([2; 32]);
        assert_eq!(a.peer_id(), peer_id(&a.public_key()));
        assert_ne!(a.peer_id(), b.peer_id());
        assert_eq!(a.peer_id().len(), 33);
    }

    #[test]
    fn key_files_round_trip_and_bad_ones_are_refused() {
        let dir = std::env::temp_dir().join(format!("tributary-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("peer.key");
        let _ = std::fs::remove_file(&path);
        let id = Identity::generate();
        id.save(&path).unwrap();
        assert_eq!(Identity::load(&path).unwrap().peer_id(), id.peer_id());
        assert!(
            id.save(&path).is_err(),
            "an existing key is never overwritten"
        );
        std::fs::write(&path, "not hex").unwrap();
        let err = Identity::load(&path).err().unwrap().to_string();
        assert!(err.contains("64 hex digits"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn length_prefixes_keep_fields_apart() {
        assert_ne!(
            checkpoint_message("ab", 1, b"c"),
            checkpoint_message("a", 1, b"bc")
        );
    }
}
