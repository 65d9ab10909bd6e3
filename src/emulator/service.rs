//! The upstream services the emulator stands in for and their endpoints: the closed sets that
//! counters, quotas, token audiences and fault profiles are keyed by.

use crate::wire::{
    DEFENDER_RESOURCE, DEFENDER_SCORE_ROLE, GRAPH_RESOURCE, GRAPH_SECURE_SCORE_ROLE,
};

/// An upstream service: what a token's audience names and what a quota belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    /// Defender for Endpoint (`https://api.securitycenter.microsoft.com`).
    Defender,
    /// Microsoft Graph (`https://graph.microsoft.com`).
    Graph,
}

impl Service {
    /// The token audience (resource) of the service.
    pub fn resource(self) -> &'static str {
        match self {
            Service::Defender => DEFENDER_RESOURCE,
            Service::Graph => GRAPH_RESOURCE,
        }
    }

    /// The application role the service's score endpoints require.
    pub fn role(self) -> &'static str {
        match self {
            Service::Defender => DEFENDER_SCORE_ROLE,
            Service::Graph => GRAPH_SECURE_SCORE_ROLE,
        }
    }

    /// The service whose resource `resource` names (case-insensitive, trailing `/` ignored), as
    /// Entra resolves a `{resource}/.default` scope.
    pub fn from_resource(resource: &str) -> Option<Self> {
        let resource = resource.trim_end_matches('/');
        [Service::Defender, Service::Graph]
            .into_iter()
            .find(|service| service.resource().eq_ignore_ascii_case(resource))
    }
}

/// An endpoint the emulator counts calls of: the score endpoints and Graph's control profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// Defender `GET /api/configurationScore` (the device score).
    ConfigurationScore,
    /// Defender `GET /api/exposureScore`.
    ExposureScore,
    /// Graph `GET /v1.0/security/secureScores`.
    SecureScores,
    /// Graph `GET /v1.0/security/secureScoreControlProfiles` (one call per page).
    ControlProfiles,
}

impl Endpoint {
    /// The service that serves it.
    pub fn service(self) -> Service {
        match self {
            Endpoint::ConfigurationScore | Endpoint::ExposureScore => Service::Defender,
            Endpoint::SecureScores | Endpoint::ControlProfiles => Service::Graph,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_resolve_case_insensitively_with_or_without_a_trailing_slash() {
        assert_eq!(
            Service::from_resource("https://GRAPH.microsoft.com/"),
            Some(Service::Graph)
        );
        assert_eq!(
            Service::from_resource(DEFENDER_RESOURCE),
            Some(Service::Defender)
        );
        assert_eq!(
            Service::from_resource("https://api.security.microsoft.com"),
            None
        );
    }
}
