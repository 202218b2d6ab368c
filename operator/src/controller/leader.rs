//! Leader election on a coordination.k8s.io Lease (kube-lease-manager): replicas campaign, one
//! holds the lease and acts; a replica that loses it stops at once.

use std::time::Duration;

use anyhow::Context as _;
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// How long a lease lives without renewal: the longest a crashed leader blocks the others.
    pub duration_seconds: u64,
}

/// A held lease; renewed in the background until dropped or released.
pub(super) struct Leadership {
    held: watch::Receiver<bool>,
    task: JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
}

/// Waits until this replica holds the lease.
pub(super) async fn acquire(
    client: Client,
    identity: &str,
    settings: &LeaseSettings,
) -> anyhow::Result<Leadership> {
    let duration = settings.duration_seconds.max(3);
    // Renew a third of the lease early, so a slow API call never lets it lapse.
    let grace = (duration / 3).max(1);
    let manager = LeaseManagerBuilder::new(client, &settings.name)
        .with_namespace(&settings.namespace)
        .with_identity(identity)
        .with_duration(duration)
        .with_grace(grace)
        .build()
        .await
        .with_context(|| {
            format!(
                "setting up the leader lease {}/{}",
                settings.namespace, settings.name
            )
        })?;
    let (mut held, task) = manager.watch().await;
    info!(lease = %settings.name, namespace = %settings.namespace, %identity, "campaigning for the leader lease");
    while !*held.borrow_and_update() {
        held.changed()
            .await
            .context("the lease manager stopped before this replica became the leader")?;
    }
    info!(lease = %settings.name, %identity, "holding the leader lease");
    Ok(Leadership { held, task })
}

impl Leadership {
    /// Resolves when the lease is lost, saying why.
    pub(super) async fn lost(&mut self) -> String {
        loop {
            if self.held.changed().await.is_err() {
                return "the lease manager stopped".into();
            }
            if !*self.held.borrow_and_update() {
                return "another replica holds it now".into();
            }
        }
    }

    /// Gives the lease up so a standby takes over at once instead of after it expires.
    pub(super) async fn release(self) {
        drop(self.held);
        let _ = tokio::time::timeout(Duration::from_secs(3), self.task).await;
    }
}
