//! The kubelet's view of the API server: a watch on Pods bound to the node (list-then-watch,
//! which a 1.20 server supports; no streaming lists), dispatched to the node's pod workers.

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use super::node::{Namespaces, Node};

pub async fn run(node: Arc<Node>) {
    let api: Api<Pod> = match &node.namespaces {
        Namespaces::Only(list) if list.len() == 1 => Api::namespaced(node.client.clone(), &list[0]),
        _ => Api::all(node.client.clone()),
    };
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", node.name));
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let mut listed = HashSet::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => listed.clear(),
            Ok(Event::InitApply(pod)) => {
                if let Some(uid) = &pod.metadata.uid {
                    listed.insert(uid.clone());
                }
                node.observe(pod);
            }
            Ok(Event::InitDone) => node.gone_unless_listed(&listed),
            Ok(Event::Apply(pod)) => node.observe(pod),
            Ok(Event::Delete(pod)) => {
                if let Some(uid) = &pod.metadata.uid {
                    node.gone(uid);
                }
            }
            Err(e) => tracing::warn!(node = %node.name, "watching pods: {e}"),
        }
    }
}
