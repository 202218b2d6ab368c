//! The Tributary exchange protocol (gRPC package `tributary.v1alpha1`), generated from
//! `proto/tributary/v1alpha1/exchange.proto` at build time.

/// Generated messages, client and server of `tributary.v1alpha1`.
#[allow(clippy::all, clippy::unwrap_used, clippy::expect_used, missing_docs)]
pub mod v1alpha1 {
    tonic::include_proto!("tributary.v1alpha1");
}

pub mod convert;
pub mod identity;

use v1alpha1::ProtocolVersion;

/// The protocol version this build speaks. Majors are incompatible; minors add fields only.
pub const PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion { major: 2, minor: 1 };

/// Largest single gRPC message either side accepts. Payloads stream in chunks well below it,
/// so a peer cannot make the other side buffer an arbitrary message.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// Payload chunk size used by senders (blobs, updates, checkpoints).
pub const CHUNK_BYTES: usize = 1 << 20;

/// Whether a peer speaking `theirs` can talk to this build.
pub fn is_compatible(theirs: &ProtocolVersion) -> bool {
    theirs.major == PROTOCOL_VERSION.major
}

#[cfg(test)]
mod tests {
    use super::v1alpha1::*;
    use super::*;
    use prost::Message;

    #[test]
    fn submit_header_round_trips_on_the_wire() {
        let msg = SubmitUpdateMessage {
            part: Some(submit_update_message::Part::Header(UpdateHeader {
                version: Some(PROTOCOL_VERSION),
                run_id: "tiny-demo".into(),
                round: 7,
                peer_id: "peer-a".into(),
                codec: Some(CodecParams {
                    chunk_side: 64,
                    top_k: 64,
                    bits: 2,
                    quantizer: Quantizer::Production.into(),
                    codec_format_version: 1,
                }),
                payload_bytes: 1234,
                payload_sha256: vec![7; 32],
                inner_loss: 3.25,
                tokens: 4096,
                signature: vec![1; 64],
                model_version: 6,
            })),
        };
        let bytes = msg.encode_to_vec();
        let back = SubmitUpdateMessage::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn truncated_message_is_an_error_not_a_panic() {
        let msg = BlobChunk {
            offset: 3,
            data: vec![9; 100],
            total_bytes: 100,
            sha256: vec![1; 32],
        };
        let bytes = msg.encode_to_vec();
        for cut in 1..bytes.len() {
            // Either a clean error or a valid shorter message; never a panic.
            let _ = BlobChunk::decode(&bytes[..cut]);
        }
        assert!(BlobChunk::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn only_the_same_major_version_is_compatible() {
        assert!(is_compatible(&ProtocolVersion { major: 2, minor: 9 }));
        assert!(!is_compatible(&ProtocolVersion { major: 1, minor: 0 }));
        assert!(!is_compatible(&ProtocolVersion { major: 3, minor: 0 }));
        assert!(!is_compatible(&ProtocolVersion { major: 0, minor: 0 }));
    }
}
