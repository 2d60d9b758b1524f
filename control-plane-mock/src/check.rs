//! Consistency checks across resources: things a client would accept but
//! that make traffic fail (a route to a cluster that is not there, an EDS
//! cluster with no ClusterLoadAssignment, a listener whose RDS name has no
//! RouteConfiguration). Warnings, not errors: a snapshot may be mid-edit, and
//! a control plane is allowed to send such a state.

use std::collections::BTreeSet;

use prost::Message;

use legate::config::validate::{unpack, HCM_TYPE};
use legate::proto::envoy::config::listener::v3::{filter, Listener};
use legate::proto::envoy::config::route::v3::{route, route_action, RouteConfiguration};
use legate::proto::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};

use crate::resource_type::ResourceType;
use crate::snapshot::Resources;

/// Every warning for one set of resources (the default set, or a node's).
pub fn consistency(resources: &Resources) -> Vec<String> {
    let mut out = Vec::new();
    let clusters = resources.get(ResourceType::Cluster);
    let endpoints = resources.get(ResourceType::Endpoint);
    let routes = resources.get(ResourceType::Route);

    for c in clusters.values() {
        if let Some(eds) = &c.eds_name {
            if !endpoints.contains_key(eds) {
                out.push(format!(
                    "cluster `{}` is of type EDS but there is no ClusterLoadAssignment `{eds}` among the endpoints: it will have no hosts",
                    c.name
                ));
            }
        }
    }
    for r in routes.values() {
        if let Ok(rc) = RouteConfiguration::decode(r.any.value.as_slice()) {
            missing_clusters(
                &rc,
                &format!("route configuration `{}`", rc.name),
                resources,
                &mut out,
            );
        }
    }
    for l in resources.get(ResourceType::Listener).values() {
        let Ok(listener) = Listener::decode(l.any.value.as_slice()) else {
            continue;
        };
        for hcm in connection_managers(&listener) {
            match &hcm.route_specifier {
                Some(RouteSpecifier::Rds(rds)) if !routes.contains_key(&rds.route_config_name) => {
                    out.push(format!(
                        "listener `{}` uses route configuration `{}` (RDS), which is not among the routes",
                        listener.name, rds.route_config_name
                    ));
                }
                Some(RouteSpecifier::RouteConfig(rc)) => missing_clusters(
                    rc,
                    &format!("listener `{}` (inline route_config)", listener.name),
                    resources,
                    &mut out,
                ),
                _ => {}
            }
        }
    }
    out
}

/// The HTTP connection managers of a listener: in its filter chains, or the
/// one of an API listener.
fn connection_managers(l: &Listener) -> Vec<HttpConnectionManager> {
    let chains = l.filter_chains.iter().chain(l.default_filter_chain.iter());
    let mut out: Vec<HttpConnectionManager> = chains
        .flat_map(|fc| fc.filters.iter())
        .filter_map(|f| match &f.config_type {
            Some(filter::ConfigType::TypedConfig(any)) => unpack(any, HCM_TYPE),
            _ => None,
        })
        .collect();
    if let Some(any) = l.api_listener.as_ref().and_then(|a| a.api_listener.as_ref()) {
        out.extend(unpack::<HttpConnectionManager>(any, HCM_TYPE));
    }
    out
}

fn missing_clusters(rc: &RouteConfiguration, what: &str, resources: &Resources, out: &mut Vec<String>) {
    let clusters = resources.get(ResourceType::Cluster);
    let mut missing = BTreeSet::new();
    for vh in &rc.virtual_hosts {
        for r in &vh.routes {
            let Some(route::Action::Route(action)) = &r.action else {
                continue;
            };
            match &action.cluster_specifier {
                Some(route_action::ClusterSpecifier::Cluster(name)) if !clusters.contains_key(name) => {
                    missing.insert(name.clone());
                }
                Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
                    for c in &w.clusters {
                        if !c.name.is_empty() && !clusters.contains_key(&c.name) {
                            missing.insert(c.name.clone());
                        }
                    }
                }
                _ => {}
            }
        }
    }
    for name in missing {
        out.push(format!(
            "{what} routes to cluster `{name}`, which is not among the clusters: requests will get 503"
        ));
    }
}

#[cfg(test)]
mod tests {
    use crate::Snapshot;

    #[test]
    fn warns_about_missing_clusters_endpoints_and_routes() {
        let s = Snapshot::from_yaml(
            r#"
clusters:
- {name: a, type: EDS, eds_cluster_config: {eds_config: {ads: {}}}}
- {name: b, type: EDS, eds_cluster_config: {eds_config: {ads: {}}, service_name: b-eds}}
endpoints:
- {cluster_name: b-eds}
routes:
- name: r1
  virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
    - {match: {prefix: /a}, route: {cluster: a}}
    - {match: {prefix: /x}, route: {cluster: x}}
    - match: {prefix: /w}
      route: {weighted_clusters: {clusters: [{name: b, weight: 1}, {name: z, weight: 1}]}}
"#,
        )
        .unwrap();
        let w = s.warnings();
        assert_eq!(w.len(), 3, "{w:#?}");
        assert!(w[0].contains("cluster `a` is of type EDS"), "{w:#?}");
        assert!(w[1].contains("cluster `x`"), "{w:#?}");
        assert!(w[2].contains("cluster `z`"), "{w:#?}");
    }
}
