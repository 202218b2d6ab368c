//! Reconciles a Contributor: its peer keys, its worker StatefulSet (the scale subresource drives
//! its replicas) and its status; an external Contributor only records a peer run elsewhere.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tributary_crds::{Contributor, ContributorStatus, PeerScore, RunPhase, TrainingRun};
use tributary_proto::identity::{Identity, peer_id};

use super::children::{self, contributor_selector, keys_secret_name, pod_names};
use super::contributor_status::{self, Observed};
use super::keys::{self, KeySecretRefused};
use super::{CACHES_WAIT, Context, MANAGER, ReconcileError, apply_status};

pub(super) const CONTROLLER: &str = "contributor";

pub(super) async fn reconcile(
    contributor: Arc<Contributor>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    if !ctx.caches.ready() {
        return Ok(Action::requeue(CACHES_WAIT));
    }
    let ns = contributor
        .namespace()
        .ok_or(ReconcileError::NotNamespaced)?;
    let name = contributor.name_any();
    let spec = &contributor.spec;
    let invalid = spec.validate();
    let run = ctx.caches.run(&ns, &spec.training_run);
    if let Some(run) = &run {
        adopt(&contributor, run, &ctx, &ns).await?;
    }
    let run_phase = run.as_ref().and_then(|r| r.status.as_ref()?.phase);
    // Workers of a finished (or impossible) run would only restart and exit: run none.
    let (wanted, blocker) = match (&run, run_phase) {
        _ if !invalid.is_empty() => (0, Some(("InvalidSpec", invalid.to_string()))),
        (None, _) => (
            0,
            Some((
                "RunNotFound",
                format!("TrainingRun {:?} does not exist in {ns}", spec.training_run),
            )),
        ),
        (Some(_), Some(RunPhase::Succeeded)) => {
            (0, Some(("RunFinished", "the run has finished".to_owned())))
        }
        (Some(_), Some(RunPhase::Failed)) => {
            (0, Some(("RunFailed", "the run has failed".to_owned())))
        }
        _ => (spec.pods_wanted(), None),
    };

    let statefulsets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    let (peer_ids, ready, replicas, blocker) = if let Some(external) = &spec.external {
        let ids = hex_key(&external.public_key)
            .map(|k| vec![peer_id(&k)])
            .unwrap_or_default();
        (ids, 0, 0, blocker)
    } else {
        let pods = pod_names(&name, spec.replicas);
        let (ids, refused) = match ensure_keys(&contributor, &ctx, &ns, &pods).await? {
            Ok(ids) => (ids, None),
            Err(refused) => (Vec::new(), Some(refused)),
        };
        let cached = ctx.caches.statefulsets.get(&ns, &name);
        let sts = match (&run, &refused) {
            (Some(run), None) => {
                let desired = children::worker_statefulset(&contributor, run, &ctx.images, wanted);
                Some(
                    ctx.caches
                        .statefulsets
                        .apply(&statefulsets, &desired)
                        .await?,
                )
            }
            // The run is gone, or the keys may not be used: stop the workers, keep the object
            // for when it is fixed; never create one.
            _ => match cached {
                Some(sts) if sts.spec.as_ref().and_then(|s| s.replicas) != Some(0) => {
                    Some(Arc::new(
                        statefulsets
                            .patch(
                                &name,
                                &PatchParams {
                                    field_manager: Some(MANAGER.into()),
                                    ..PatchParams::default()
                                },
                                &Patch::Merge(serde_json::json!({"spec": {"replicas": 0}})),
                            )
                            .await?,
                    ))
                }
                other => other,
            },
        };
        let observed = sts.as_ref().and_then(|s| s.status.as_ref());
        let ready = observed.and_then(|s| s.ready_replicas).unwrap_or(0);
        let replicas = observed.map_or(0, |s| s.replicas);
        // A spec error says more than a refused Secret; a refused Secret more than the run.
        let blocker = match refused {
            Some(r) if invalid.is_empty() => Some((r.reason(), r.to_string())),
            _ => blocker,
        };
        (ids, ready, replicas, blocker)
    };

    let scores = match &run {
        Some(_) if !peer_ids.is_empty() => scores(&ctx, &ns, &spec.training_run, &peer_ids),
        _ => Vec::new(),
    };
    let status = ContributorStatus {
        replicas,
        ready_replicas: ready,
        peer_ids,
        scores,
        conditions: vec![contributor_status::ready_condition(&Observed {
            blocker,
            ready,
            wanted,
            external: spec.external.is_some(),
            generation: contributor.metadata.generation,
            previous: contributor.status.as_ref(),
            now: Time(Timestamp::now()),
        })],
        observed_generation: contributor.metadata.generation,
        selector: spec.external.is_none().then(|| contributor_selector(&name)),
    };
    if contributor.status.as_ref() != Some(&status) {
        let api: Api<Contributor> = Api::namespaced(ctx.client.clone(), &ns);
        apply_status(&api, &name, "Contributor", &status).await?;
        publish_events(&contributor, &ctx, &status).await;
    }
    // Scaling, pod readiness and the run's own changes arrive as watch events; the periodic
    // pass only refreshes scores, so it runs at a sixth of the run-status rate (a 100 × 10
    // cluster otherwise asks the API server for ~200 reconciles a second, docs/benchmarks.md).
    Ok(Action::requeue(ctx.poll * 6))
}

fn hex_key(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok()?.try_into().ok()
}

/// Makes the run own its Contributors (not as controller): deleting a run deletes them, and
/// with them their workers and keys.
async fn adopt(
    contributor: &Contributor,
    run: &TrainingRun,
    ctx: &Context,
    ns: &str,
) -> Result<(), ReconcileError> {
    let Some(uid) = run.uid() else {
        return Ok(());
    };
    let owned = contributor.owner_references().iter().any(|o| o.uid == uid);
    if owned {
        return Ok(());
    }
    let reference = OwnerReference {
        api_version: TrainingRun::api_version(&()).into_owned(),
        kind: TrainingRun::kind(&()).into_owned(),
        name: run.name_any(),
        uid,
        controller: Some(false),
        block_owner_deletion: Some(false),
    };
    let api: Api<Contributor> = Api::namespaced(ctx.client.clone(), ns);
    let patch = serde_json::json!({
        "apiVersion": Contributor::api_version(&()),
        "kind": Contributor::kind(&()),
        "metadata": { "ownerReferences": [reference] },
    });
    api.patch(
        &contributor.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Makes sure every pod has a key and returns the peer ids, in pod order; or why the Secret
/// the Contributor names may not be used.
async fn ensure_keys(
    contributor: &Contributor,
    ctx: &Context,
    ns: &str,
    pods: &[String],
) -> Result<Result<Vec<String>, KeySecretRefused>, ReconcileError> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    if let Some(own) = &contributor.spec.key_secret_ref {
        // The user's Secret: read it, never write it, and use it only when it is meant for us.
        let Some(secret) = secrets.get_opt(&own.name).await? else {
            return Ok(Err(KeySecretRefused::NotFound(own.name.clone())));
        };
        let uid = contributor.metadata.uid.as_deref();
        if let Err(refused) = keys::admit_key_secret(&secret, &contributor.name_any(), uid) {
            return Ok(Err(refused));
        }
        let data = secret.data.unwrap_or_default();
        return Ok(Ok(keys::peer_ids_of_secret(&data, pods)));
    }
    let name = keys_secret_name(&contributor.name_any());
    let mut existing = ctx.caches.secrets.get(ns, &name);
    let covers = |s: &Option<Arc<Secret>>| {
        let data = s.as_ref().and_then(|s| s.data.as_ref());
        pods.iter().all(|p| data.is_some_and(|d| d.contains_key(p)))
    };
    if !covers(&existing) {
        // The cache may not have seen a Secret written a moment ago: read it live before
        // minting keys, so a key is never replaced by another.
        existing = secrets.get_opt(&name).await?.map(Arc::new);
    }
    let data = existing
        .as_ref()
        .and_then(|s| s.data.clone())
        .unwrap_or_default();
    let (all, grew) = keys::with_missing(&data, pods, Identity::generate);
    if grew || existing.is_none() {
        ctx.caches
            .secrets
            .apply(&secrets, &children::keys_secret(contributor, &all))
            .await?;
    }
    Ok(Ok(keys::peer_ids(&all, pods)))
}

/// The coordinator's view of these peers (score and exclusion), in the given order, from the
/// run's newest status (its reconcile asks the coordinator; the answer is shared).
fn scores(ctx: &Context, ns: &str, run: &str, peers: &[String]) -> Vec<PeerScore> {
    let Some(status) = ctx.caches.status(ns, run) else {
        return Vec::new();
    };
    peers
        .iter()
        .filter_map(|id| status.peers.iter().find(|p| &p.peer_id == id))
        .map(|p| PeerScore {
            peer_id: p.peer_id.clone(),
            score: p.score,
            round: p.last_round_submitted,
            excluded: !p.active || !p.excluded.is_empty(),
            reason: (!p.excluded.is_empty()).then(|| p.excluded.clone()),
            last_score: p.last_score,
            aggregated: p.selected,
        })
        .collect()
}

async fn publish_events(contributor: &Contributor, ctx: &Context, after: &ContributorStatus) {
    let reference = contributor.object_ref(&());
    for event in contributor_status::events(contributor.status.as_ref(), after) {
        // Events are best effort: a failed one must not fail the reconcile.
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(contributor = %contributor.name_any(), "event not recorded: {e}");
        }
    }
}
