//! The peer's side of the exchange protocol: signed join, round events, chunked uploads, and
//! blob downloads verified against their SHA-256.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use tonic::transport::{Channel, Endpoint};
use tributary_proto::identity::{self, Identity};
use tributary_proto::v1alpha1::exchange_client::ExchangeClient;
use tributary_proto::v1alpha1::{
    Candidate, CheckpointInfo, CodecParams, GetAggregateRequest, GetCandidateRequest,
    GetCheckpointRequest, GetStatusRequest, HeartbeatRequest, HeartbeatResponse, JoinRequest,
    JoinResponse, ListCandidatesRequest, ListCandidatesResponse, ListCheckpointsRequest, PeerScore,
    PutCheckpointHeader, PutCheckpointMessage, RoundEvent, RunStatus, SubmitScoresRequest,
    SubmitScoresResponse, SubmitUpdateMessage, SubmitUpdateResponse, UpdateHeader,
    WatchRoundsRequest, put_checkpoint_message, submit_update_message,
};
use tributary_proto::{CHUNK_BYTES, MAX_MESSAGE_BYTES, PROTOCOL_VERSION};

use super::failure::{self, Failure, Permanent, classify_join};

#[derive(Clone)]
pub(crate) struct Client {
    inner: ExchangeClient<Channel>,
}

/// What a peer reports with its update.
pub(crate) struct UpdateReport {
    pub round: u64,
    /// The version of θ the update was trained from.
    pub model_version: u64,
    pub inner_loss: f64,
    pub tokens: u64,
}

impl Client {
    /// Connects; a malformed address is a [`Permanent`] error, an unreachable one is not.
    pub(crate) async fn connect(url: &str) -> Result<Self> {
        failure::check_coordinator_url(url)?;
        let channel = Endpoint::from_shared(url.to_owned())
            .map_err(|e| Permanent {
                what: format!("malformed coordinator address {url:?}: {e}"),
                fix: "give it as http://HOST:PORT",
            })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_keepalive(Some(Duration::from_secs(20)))
            .connect()
            .await
            .with_context(|| format!("connecting to {url}"))?;
        Ok(Self {
            inner: ExchangeClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        })
    }

    /// Joins; a refusal that retrying cannot fix is a [`Permanent`] error.
    pub(crate) async fn join(&mut self, id: &Identity, run_id: &str) -> Result<JoinResponse> {
        let unix_millis = unix_millis();
        let key = id.public_key();
        let signature = id.sign(&identity::join_message(run_id, &key, unix_millis));
        let response = self
            .inner
            .join(JoinRequest {
                version: Some(PROTOCOL_VERSION),
                run_id: run_id.to_owned(),
                public_key: key.to_vec(),
                capabilities: None,
                unix_millis,
                signature,
            })
            .await
            .map_err(
                |status| match classify_join(status.code(), status.message()) {
                    Failure::Permanent(p) => anyhow::Error::new(p),
                    Failure::Transient(why) => anyhow::anyhow!("join: {why}"),
                },
            )?
            .into_inner();
        if response.peer_id != id.peer_id() {
            return Err(failure::foreign_peer_id(&response.peer_id, &id.peer_id()).into());
        }
        Ok(response)
    }

    /// The run's status (`GetStatus`), with the newest round of its history (and the run's
    /// spec when `with_spec`).
    pub(crate) async fn status(&mut self, with_spec: bool) -> Result<RunStatus> {
        Ok(self
            .inner
            .get_status(GetStatusRequest {
                history_limit: 1,
                include_spec: with_spec,
            })
            .await
            .context("asking the coordinator for the run's status")?
            .into_inner())
    }

    /// The newest checkpoint the coordinator holds, if any.
    pub(crate) async fn latest_checkpoint(&mut self) -> Result<Option<CheckpointInfo>> {
        Ok(self
            .inner
            .list_checkpoints(ListCheckpointsRequest {
                version: Some(PROTOCOL_VERSION),
            })
            .await
            .context("listing the run's checkpoints")?
            .into_inner()
            .checkpoints
            .into_iter()
            .max_by_key(|c| c.model_version))
    }

    /// A validator's share of a closed round's candidates; waits up to `wait` for the round
    /// to close.
    pub(crate) async fn list_candidates(
        &mut self,
        id: &Identity,
        run_id: &str,
        round: u64,
        wait: Duration,
    ) -> Result<ListCandidatesResponse> {
        let key = id.public_key();
        let t = unix_millis();
        Ok(self
            .inner
            .list_candidates(ListCandidatesRequest {
                version: Some(PROTOCOL_VERSION),
                run_id: run_id.into(),
                validator_public_key: key.to_vec(),
                round,
                wait_millis: wait.as_millis().min(u128::from(u32::MAX)) as u32,
                unix_millis: t,
                signature: id.sign(&identity::candidates_message(run_id, round, &key, "", t)),
            })
            .await
            .with_context(|| format!("listing the candidates of round {round}"))?
            .into_inner())
    }

    /// One candidate's payload, verified against the digest the listing gave.
    pub(crate) async fn candidate(
        &mut self,
        id: &Identity,
        run_id: &str,
        round: u64,
        c: &Candidate,
    ) -> Result<Vec<u8>> {
        let key = id.public_key();
        let t = unix_millis();
        let stream = self
            .inner
            .get_candidate(GetCandidateRequest {
                version: Some(PROTOCOL_VERSION),
                run_id: run_id.into(),
                validator_public_key: key.to_vec(),
                round,
                peer_id: c.peer_id.clone(),
                unix_millis: t,
                signature: id.sign(&identity::candidates_message(
                    run_id, round, &key, &c.peer_id, t,
                )),
            })
            .await
            .with_context(|| format!("fetching the update of {} in round {round}", c.peer_id))?
            .into_inner();
        let what = format!("update of {} in round {round}", c.peer_id);
        download(stream, &c.payload_sha256, &what).await
    }

    /// A validator's signed scores of `round`.
    pub(crate) async fn submit_scores(
        &mut self,
        id: &Identity,
        run_id: &str,
        round: u64,
        scores: Vec<PeerScore>,
    ) -> Result<SubmitScoresResponse> {
        let key = id.public_key();
        let t = unix_millis();
        Ok(self
            .inner
            .submit_scores(SubmitScoresRequest {
                version: Some(PROTOCOL_VERSION),
                round,
                signature: id.sign(&identity::scores_message(run_id, round, &key, t, &scores)),
                scores,
                run_id: run_id.into(),
                validator_public_key: key.to_vec(),
                unix_millis: t,
            })
            .await
            .with_context(|| format!("submitting the scores of round {round}"))?
            .into_inner())
    }

    pub(crate) async fn heartbeat(
        &mut self,
        peer_id: &str,
        version: u64,
        fingerprint: &[u8],
    ) -> Result<HeartbeatResponse> {
        Ok(self
            .inner
            .heartbeat(HeartbeatRequest {
                version: Some(PROTOCOL_VERSION),
                peer_id: peer_id.to_owned(),
                model_version: version,
                parameter_fingerprint: fingerprint.to_vec(),
            })
            .await?
            .into_inner())
    }

    pub(crate) async fn watch(
        &mut self,
        peer_id: &str,
        from_round: u64,
    ) -> Result<tonic::Streaming<RoundEvent>> {
        Ok(self
            .inner
            .watch_rounds(WatchRoundsRequest {
                version: Some(PROTOCOL_VERSION),
                peer_id: peer_id.to_owned(),
                from_round,
            })
            .await
            .context("watching rounds")?
            .into_inner())
    }

    /// Signs and streams one update: the header, then chunks of at most `CHUNK_BYTES`.
    pub(crate) async fn submit(
        &mut self,
        id: &Identity,
        run_id: &str,
        codec: &CodecParams,
        report: &UpdateReport,
        payload: Vec<u8>,
    ) -> Result<SubmitUpdateResponse> {
        let mut header = UpdateHeader {
            version: Some(PROTOCOL_VERSION),
            run_id: run_id.to_owned(),
            round: report.round,
            peer_id: id.peer_id(),
            codec: Some(*codec),
            payload_bytes: payload.len() as u64,
            payload_sha256: identity::sha256(&payload).to_vec(),
            inner_loss: report.inner_loss,
            tokens: report.tokens,
            signature: Vec::new(),
            model_version: report.model_version,
        };
        header.signature = id.sign(&identity::update_message(&header));
        let mut messages = vec![SubmitUpdateMessage {
            part: Some(submit_update_message::Part::Header(header)),
        }];
        messages.extend(payload.chunks(CHUNK_BYTES).map(|c| SubmitUpdateMessage {
            part: Some(submit_update_message::Part::PayloadChunk(c.to_vec())),
        }));
        Ok(self
            .inner
            .submit_update(tokio_stream::iter(messages))
            .await
            .context("submitting the update")?
            .into_inner())
    }

    pub(crate) async fn aggregate(&mut self, round: u64, sha256: &[u8]) -> Result<Vec<u8>> {
        let stream = self
            .inner
            .get_aggregate(GetAggregateRequest {
                version: Some(PROTOCOL_VERSION),
                round,
            })
            .await
            .with_context(|| format!("fetching the aggregate of round {round}"))?
            .into_inner();
        download(stream, sha256, &format!("aggregate of round {round}")).await
    }

    pub(crate) async fn checkpoint(&mut self, info: &CheckpointInfo) -> Result<Vec<u8>> {
        let stream = self
            .inner
            .get_checkpoint(GetCheckpointRequest {
                version: Some(PROTOCOL_VERSION),
                model_version: info.model_version,
            })
            .await
            .with_context(|| format!("fetching the checkpoint at version {}", info.model_version))?
            .into_inner();
        let what = format!("checkpoint at version {}", info.model_version);
        download(stream, &info.sha256, &what).await
    }

    pub(crate) async fn put_checkpoint(
        &mut self,
        id: &Identity,
        run_id: &str,
        version: u64,
        bytes: Vec<u8>,
    ) -> Result<()> {
        let sha = identity::sha256(&bytes).to_vec();
        let header = PutCheckpointHeader {
            version: Some(PROTOCOL_VERSION),
            peer_id: id.peer_id(),
            signature: id.sign(&identity::checkpoint_message(run_id, version, &sha)),
            info: Some(CheckpointInfo {
                model_version: version,
                bytes: bytes.len() as u64,
                sha256: sha,
                writer_peer_id: id.peer_id(),
            }),
        };
        let mut messages = vec![PutCheckpointMessage {
            part: Some(put_checkpoint_message::Part::Header(header)),
        }];
        messages.extend(bytes.chunks(CHUNK_BYTES).map(|c| PutCheckpointMessage {
            part: Some(put_checkpoint_message::Part::DataChunk(c.to_vec())),
        }));
        let r = self
            .inner
            .put_checkpoint(tokio_stream::iter(messages))
            .await
            .context("uploading the checkpoint")?
            .into_inner();
        if !r.accepted {
            bail!("checkpoint refused: {}", r.message);
        }
        Ok(())
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Reassembles a chunked blob, checking offsets, the declared size and the SHA-256 (both the
/// one the server sends and the one the caller expects).
async fn download(
    mut stream: tonic::Streaming<tributary_proto::v1alpha1::BlobChunk>,
    expected_sha: &[u8],
    what: &str,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut total = None;
    while let Some(chunk) = stream.message().await.with_context(|| what.to_owned())? {
        if chunk.offset != out.len() as u64 {
            bail!(
                "{what}: chunk at offset {} after {} bytes",
                chunk.offset,
                out.len()
            );
        }
        if total.is_none() {
            total = Some(chunk.total_bytes);
            if chunk.sha256 != expected_sha {
                bail!("{what}: the server's hash differs from the announced one");
            }
        }
        if (out.len() + chunk.data.len()) as u64 > total.unwrap_or(0) {
            bail!("{what}: more bytes than declared");
        }
        out.extend_from_slice(&chunk.data);
    }
    if Some(out.len() as u64) != total {
        bail!("{what}: {} bytes of {:?}", out.len(), total);
    }
    if identity::sha256(&out).as_slice() != expected_sha {
        bail!("{what}: SHA-256 mismatch");
    }
    Ok(out)
}
