//! The four resource types the mock serves, with their type URLs and the
//! names they go by in snapshot files and the admin API.

use std::fmt;

/// A resource type the mock serves. The order of the variants is the order
/// in which an ADS stream pushes a snapshot change (make before break:
/// clusters, then their endpoints, then listeners, then their routes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Cluster,
    Endpoint,
    Listener,
    Route,
}

impl ResourceType {
    /// Every type, in push order.
    pub const ALL: [ResourceType; 4] = [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
    ];

    /// The protobuf message name, e.g. `envoy.config.cluster.v3.Cluster`.
    pub fn message_name(self) -> &'static str {
        match self {
            ResourceType::Listener => "envoy.config.listener.v3.Listener",
            ResourceType::Route => "envoy.config.route.v3.RouteConfiguration",
            ResourceType::Cluster => "envoy.config.cluster.v3.Cluster",
            ResourceType::Endpoint => "envoy.config.endpoint.v3.ClusterLoadAssignment",
        }
    }

    /// The type URL on the wire.
    pub fn type_url(self) -> &'static str {
        match self {
            ResourceType::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            ResourceType::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            ResourceType::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ResourceType::Endpoint => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
        }
    }

    /// The key in snapshot files and the admin API (`listeners`, `routes`,
    /// `clusters`, `endpoints`).
    pub fn key(self) -> &'static str {
        match self {
            ResourceType::Listener => "listeners",
            ResourceType::Route => "routes",
            ResourceType::Cluster => "clusters",
            ResourceType::Endpoint => "endpoints",
        }
    }

    /// Short name for logs and `/clients` (LDS, RDS, CDS, EDS).
    pub fn short(self) -> &'static str {
        match self {
            ResourceType::Listener => "LDS",
            ResourceType::Route => "RDS",
            ResourceType::Cluster => "CDS",
            ResourceType::Endpoint => "EDS",
        }
    }

    pub fn from_type_url(url: &str) -> Option<ResourceType> {
        Self::ALL.into_iter().find(|t| t.type_url() == url)
    }

    pub fn from_key(key: &str) -> Option<ResourceType> {
        Self::ALL.into_iter().find(|t| t.key() == key)
    }

    /// Types whose SotW responses carry the full state and whose legacy
    /// wildcard (an empty name list) means "everything".
    pub fn is_full_state(self) -> bool {
        matches!(self, ResourceType::Listener | ResourceType::Cluster)
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in ResourceType::ALL {
            assert_eq!(ResourceType::from_type_url(t.type_url()), Some(t));
            assert_eq!(ResourceType::from_key(t.key()), Some(t));
            assert!(t.type_url().ends_with(t.message_name()));
        }
        assert_eq!(ResourceType::from_type_url("type.googleapis.com/x"), None);
    }
}
