//! The validators the operator runs for a TrainingRun (`participation.scoring.validatorReplicas`):
//! one key per validator pod in a Secret the run owns, their StatefulSet, and the public keys
//! the run's coordinator is to trust.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::{Event, EventType};
use tributary_crds::{MAX_VALIDATOR_REPLICAS, RunPhase, TrainingRun};
use tributary_proto::identity::Identity;

use super::children::{self, MANAGED_BY, pod_names, validator_keys_secret_name, validators_name};
use super::keys;
use super::{Context, ReconcileError};

/// The validators the operator runs for a run, as this reconcile left them.
#[derive(Default)]
pub(super) struct Validators {
    /// Their ed25519 public keys (hex), in pod order: the coordinator trusts these.
    pub public_keys: Vec<String>,
    /// Pods of theirs that are Ready.
    pub ready: u32,
    /// What changed that a person should see.
    pub event: Option<Event>,
}

/// Keeps the validators the operator runs for `run` as `validatorReplicas` asks: one key per
/// pod in the run's validator Secret, and their StatefulSet (no replicas once the run has
/// finished: a validator exits when its run is done). Scaled to 0, the StatefulSet keeps no pods
/// and the Secret no keys; the objects stay until the run is deleted (the operator may not
/// delete: its Role has no such verb).
pub(super) async fn reconcile_validators(
    run: &TrainingRun,
    ctx: &Context,
    ns: &str,
) -> Result<Validators, ReconcileError> {
    let name = run.name_any();
    let replicas = run.spec.participation.scoring.validator_replicas;
    let set_name = validators_name(&name);
    let secret_name = validator_keys_secret_name(&name);
    let had_any = ctx.caches.statefulsets.get(ns, &set_name).is_some()
        || ctx.caches.secrets.get(ns, &secret_name).is_some();
    if replicas == 0 && !had_any {
        return Ok(Validators::default());
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let statefulsets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
    // At most the schema's maximum, whatever reaches us.
    let replicas = i32::try_from(replicas.min(MAX_VALIDATOR_REPLICAS)).unwrap_or(0);
    let pods = pod_names(&set_name, replicas);
    let mut existing = ctx.caches.secrets.get(ns, &secret_name);
    let covers = |s: &Option<Arc<Secret>>| {
        let data = s.as_ref().and_then(|s| s.data.as_ref());
        pods.iter().all(|p| data.is_some_and(|d| d.contains_key(p)))
    };
    if !covers(&existing) {
        // The cache may not have seen a Secret written a moment ago (or one that is not ours):
        // read it live before minting keys, so a key is never replaced by another.
        existing = secrets.get_opt(&secret_name).await?.map(Arc::new);
    }
    if let Some(foreign) = existing.as_ref().filter(|s| !ours(s, run)) {
        // Someone else's Secret under our name: never write it, nor mount it into a pod whose
        // image the run's author chooses.
        let note = format!(
            "Secret {:?} exists and was not made by the operator for this run: no validators run",
            foreign.metadata.name.as_deref().unwrap_or_default()
        );
        tracing::warn!(run = %name, "{note}");
        if ctx.caches.statefulsets.get(ns, &set_name).is_some() {
            // Validators that ran before the Secret was replaced stop.
            let stopped = children::validator_statefulset(run, &ctx.images, 0);
            ctx.caches
                .statefulsets
                .apply(&statefulsets, &stopped)
                .await?;
        }
        return Ok(Validators {
            event: Some(Event {
                type_: EventType::Warning,
                reason: "ValidatorKeysRefused".into(),
                note: Some(note),
                action: "Reconcile".into(),
                secondary: None,
            }),
            ..Validators::default()
        });
    }
    let data = existing
        .as_ref()
        .and_then(|s| s.data.clone())
        .unwrap_or_default();
    let (all, changed) = keys::validator_keys(&data, &pods, Identity::generate);
    if changed || existing.is_none() {
        ctx.caches
            .secrets
            .apply(&secrets, &children::validator_keys_secret(run, &all))
            .await?;
    }
    let finished = matches!(
        run.status.as_ref().and_then(|s| s.phase),
        Some(RunPhase::Succeeded | RunPhase::Failed)
    );
    let wanted = if finished { 0 } else { replicas };
    let set = ctx
        .caches
        .statefulsets
        .apply(
            &statefulsets,
            &children::validator_statefulset(run, &ctx.images, wanted),
        )
        .await?;
    let ready = set
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let public_keys = keys::public_keys(&all, &pods);
    Ok(Validators {
        event: changed.then(|| Event {
            type_: EventType::Normal,
            reason: if replicas == 0 {
                "ValidatorsRemoved"
            } else {
                "ValidatorKeys"
            }
            .into(),
            note: Some(format!(
                "{} validator key(s) in Secret {secret_name}; the coordinator trusts these and \
                 participation.scoring.validators",
                public_keys.len()
            )),
            action: "Reconcile".into(),
            secondary: None,
        }),
        public_keys,
        ready: u32::try_from(ready).unwrap_or(0),
    })
}

/// Whether the operator made `secret` for `run`: our label, and the run as its owner.
fn ours(secret: &Secret, run: &TrainingRun) -> bool {
    let labelled = secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY.0))
        .is_some_and(|v| v == MANAGED_BY.1);
    let owned = run.metadata.uid.as_deref().is_some_and(|uid| {
        secret
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "TrainingRun" && o.uid == uid)
    });
    labelled && owned
}
