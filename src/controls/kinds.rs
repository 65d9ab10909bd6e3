//! The closed sets a control is described by: its category, its status (how far it is done)
//! and its state (what the tenant's admins said of it). Each has one API spelling, written
//! once here, and reads Graph's spelling where Graph has one.

use serde::{Deserialize, Serialize};

/// Declares a closed set: the enum, `ALL`, `as_str` (the API spelling) and `parse` (exactly
/// that spelling).
macro_rules! closed_set {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[doc = $doc:expr])* $variant:ident = $text:literal, )* }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
            utoipa::ToSchema,
        )]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $( $(#[doc = $doc])* $variant, )* }

        impl $name {
            /// Every value, in the order lists show them.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The API's spelling (query parameters, JSON, CSV).
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }

            /// The value spelled `text` exactly as [`Self::as_str`] writes it.
            pub fn parse(text: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|value| value.as_str() == text)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

closed_set! {
    /// A Secure Score control category, as in a score's `categories`.
    pub enum Category {
        /// Accounts, authentication, roles (Graph `Identity`).
        Identity = "identity",
        /// Information protection (Graph `Data`).
        Data = "data",
        /// Devices: Defender's secure-configuration checks, the `scid_*` controls (Graph `Device`).
        Device = "device",
        /// Microsoft 365 apps: mail, SharePoint, cloud apps (Graph `Apps`).
        Apps = "apps",
        /// Azure resources (Graph `Infrastructure`).
        Infrastructure = "infrastructure",
    }
}

impl Category {
    /// Graph's `controlCategory`, compared case-insensitively; an unknown one is none.
    pub fn from_graph(text: &str) -> Option<Self> {
        Self::parse(&text.trim().to_ascii_lowercase())
    }
}

closed_set! {
    /// How far a control is done in a tenant.
    pub enum Status {
        /// Every point achieved (`score` ≥ `max_score`).
        Done = "done",
        /// Some points achieved (0 < `score` < `max_score`).
        Partial = "partial",
        /// No point achieved.
        Todo = "todo",
    }
}

closed_set! {
    /// What a tenant's admins said of a control: the newest of its `controlStateUpdates`.
    pub enum State {
        /// Nothing said (Graph `Default`).
        Default = "default",
        /// Risk accepted: not to be done (Graph `Ignored`); no points to gain.
        Ignored = "ignored",
        /// Resolved through a third party (Graph `ThirdParty`); no points to gain.
        ThirdParty = "third_party",
        /// Reviewed, still to be decided (Graph `Reviewed`).
        Reviewed = "reviewed",
    }
}

impl State {
    /// Graph's `state` (`Default`, `Ignored`, `ThirdParty`, `Reviewed`; any case, `_` and `-`
    /// ignored); an unknown state is none.
    pub fn from_graph(text: &str) -> Option<Self> {
        let folded: String = text
            .trim()
            .chars()
            .filter(|c| *c != '_' && *c != '-')
            .collect::<String>()
            .to_ascii_lowercase();
        match folded.as_str() {
            "default" => Some(State::Default),
            "ignored" => Some(State::Ignored),
            "thirdparty" => Some(State::ThirdParty),
            "reviewed" => Some(State::Reviewed),
            _ => None,
        }
    }

    /// Whether the control's points are out of reach on purpose (ignored or resolved by a third
    /// party): it has no points to gain and nothing to do.
    pub fn is_settled(self) -> bool {
        matches!(self, State::Ignored | State::ThirdParty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip_and_graph_spellings_are_read() {
        for category in Category::ALL {
            assert_eq!(Category::parse(category.as_str()), Some(*category));
        }
        assert_eq!(Category::from_graph(" Identity"), Some(Category::Identity));
        assert_eq!(Category::from_graph("Quantum"), None);
        assert_eq!(State::parse("third_party"), Some(State::ThirdParty));
        assert_eq!(State::from_graph("ThirdParty"), Some(State::ThirdParty));
        assert_eq!(State::from_graph("third_party"), Some(State::ThirdParty));
        assert_eq!(State::from_graph("Resolved"), None);
        assert_eq!(Status::parse("Done"), None);
        assert_eq!(
            serde_json::to_string(&State::ThirdParty).unwrap(),
            "\"third_party\""
        );
    }
}
