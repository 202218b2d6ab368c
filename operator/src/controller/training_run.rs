//! Reconciles a TrainingRun: its validators (validators.rs), its coordinator (config, volume,
//! Deployment, Service) and its status.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use tributary_crds::{Problems, RunPhase, TrainingRun, TrainingRunSpec, TrainingRunStatus};
use tributary_proto::v1alpha1::RunStatus;

use super::children::{self, RUN_FILE, RUN_LABEL, config_map_name, coordinator_name};
use super::status::{self, Observed};
use super::validators::{Validators, reconcile_validators};
use super::{CACHES_WAIT, Context, ReconcileError, apply_status};

pub(super) const CONTROLLER: &str = "trainingrun";

pub(super) async fn reconcile(
    run: Arc<TrainingRun>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    if !ctx.caches.ready() {
        return Ok(Action::requeue(CACHES_WAIT));
    }
    let ns = run.namespace().ok_or(ReconcileError::NotNamespaced)?;
    let name = run.name_any();
    let caches = &ctx.caches;
    let invalid = run.spec.validate();
    let running = caches
        .config_maps
        .get(&ns, &config_map_name(&name))
        .and_then(|cm| running_spec(&cm));
    let refused = match &running {
        Some(old) if invalid.is_empty() => run.spec.frozen_changes(old),
        _ => Problems::default(),
    };
    let mut validators = Validators::default();
    if invalid.is_empty() && refused.is_empty() {
        let client = &ctx.client;
        validators = reconcile_validators(&run, &ctx, &ns).await?;
        let manifest = children::run_manifest(&run, &validators.public_keys)?;
        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        caches
            .config_maps
            .apply(&config_maps, &children::config_map(&run, &manifest))
            .await?;
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
        caches
            .pvcs
            .apply(&pvcs, &children::coordinator_pvc(&run))
            .await?;
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let deployment = children::coordinator_deployment(&run, &ctx.images, &manifest);
        caches.deployments.apply(&deployments, &deployment).await?;
        let services: Api<Service> = Api::namespaced(client.clone(), &ns);
        caches
            .services
            .apply(&services, &children::coordinator_service(&run))
            .await?;
    }

    let (coordinator, problem) = if invalid.is_empty() {
        coordinator_status(&ctx, &ns, &name, run.spec.coordinator.port).await
    } else {
        (None, None)
    };
    caches.remember_status(&ns, &name, coordinator.clone());
    let own_peers = own_peers(&ctx, &ns, &name);
    let previous = run.status.as_ref();
    let new = status::run_status(&Observed {
        generation: run.metadata.generation,
        invalid: &invalid,
        refused: &refused,
        coordinator: coordinator.as_deref(),
        coordinator_problem: problem,
        own_peers: &own_peers,
        ready_validators: validators.ready,
        min_peers: run.spec.participation.min_peers,
        endpoint: children::coordinator_endpoint(&run),
        previous,
        now: Time(Timestamp::now()),
    });
    if previous != Some(&new) {
        let runs: Api<TrainingRun> = Api::namespaced(ctx.client.clone(), &ns);
        apply_status(&runs, &name, "TrainingRun", &new).await?;
        publish_events(&run, &ctx, previous, &new).await;
    }
    if let Some(event) = validators.event {
        // Best effort, as every event.
        if let Err(e) = ctx.recorder.publish(&event, &run.object_ref(&())).await {
            tracing::warn!(run = %name, "event not recorded: {e}");
        }
    }
    Ok(match new.phase {
        Some(RunPhase::Succeeded | RunPhase::Failed) => Action::requeue(ctx.poll * 12),
        _ => Action::requeue(ctx.poll),
    })
}

/// The spec the coordinator was last configured with, from its ConfigMap.
fn running_spec(cm: &ConfigMap) -> Option<TrainingRunSpec> {
    let text = cm.data.as_ref()?.get(RUN_FILE)?;
    serde_yaml::from_str::<TrainingRun>(text)
        .ok()
        .map(|run| run.spec)
}

/// The coordinator's status when a Ready coordinator pod answers; otherwise why not.
async fn coordinator_status(
    ctx: &Context,
    ns: &str,
    run: &str,
    port: u16,
) -> (Option<Arc<RunStatus>>, Option<String>) {
    let ip = ctx
        .caches
        .coordinator_pods
        .state()
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(ns))
        .filter(|p| p.labels().get(RUN_LABEL).map(String::as_str) == Some(run))
        .find_map(|p| ready_ip(p));
    let Some(ip) = ip else {
        return (
            None,
            Some(format!("no Ready pod of {}", coordinator_name(run))),
        );
    };
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip
    };
    let url = format!("http://{host}:{port}");
    match ctx.probe.status(url).await {
        Ok(status) => (Some(Arc::new(status)), None),
        Err(e) => (None, Some(e)),
    }
}

/// The IP of a pod that is Ready and not being deleted.
pub(super) fn ready_ip(pod: &Pod) -> Option<String> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    let ready = status
        .conditions
        .as_ref()?
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    ready.then(|| status.pod_ip.clone()).flatten()
}

/// Peer ids of this run's in-cluster workers, as their Contributors report them.
fn own_peers(ctx: &Context, ns: &str, run: &str) -> BTreeSet<String> {
    ctx.caches
        .contributors
        .state()
        .iter()
        .filter(|c| c.namespace().as_deref() == Some(ns))
        .filter(|c| c.spec.training_run == run && c.spec.external.is_none())
        .filter_map(|c| c.status.as_ref())
        .flat_map(|s| s.peer_ids.iter().cloned())
        .collect()
}

async fn publish_events(
    run: &TrainingRun,
    ctx: &Context,
    before: Option<&TrainingRunStatus>,
    after: &TrainingRunStatus,
) {
    let mut events = Vec::new();
    if let Some((old, new)) = status::transition(before, after) {
        let reason = after
            .conditions
            .iter()
            .find(|c| c.type_ == tributary_crds::condition::PROGRESSING)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        events.push(Event {
            type_: match new {
                RunPhase::Failed | RunPhase::Degraded => EventType::Warning,
                _ => EventType::Normal,
            },
            reason: format!("{new:?}"),
            note: Some(match old {
                Some(old) => format!("{old:?} → {new:?}: {reason}"),
                None => format!("{new:?}: {reason}"),
            }),
            action: "Reconcile".into(),
            secondary: None,
        });
    }
    let spec_valid = |s: Option<&TrainingRunStatus>| {
        s.and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == tributary_crds::condition::SPEC_VALID)
                .map(|c| (c.status.clone(), c.message.clone()))
        })
    };
    if let Some((state, message)) = spec_valid(Some(after))
        && state == "False"
        && spec_valid(before).map(|(s, _)| s) != Some(state)
    {
        events.push(Event {
            type_: EventType::Warning,
            reason: "SpecRefused".into(),
            note: Some(message.chars().take(1000).collect()),
            action: "Validate".into(),
            secondary: None,
        });
    }
    let reference = run.object_ref(&());
    for event in events {
        // Events are best effort: a failed one must not fail the reconcile.
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(run = %run.name_any(), "event not recorded: {e}");
        }
    }
}
