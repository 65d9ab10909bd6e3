//! The emulated Secure Score catalogue: the controls a tenant may have, read once from
//! `catalogue.tsv` (one control a line, beside this file) — data kept as data, so that a control
//! is added with one line.

use std::sync::LazyLock;

/// How a control is scored and what its `controlScores` entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Pass or fail; the entry has `on` (`"true"` / `"false"`).
    On,
    /// A share of the tenant's users; the entry has `count` and `total`.
    Users,
    /// A share of the tenant's devices (Defender's `scid_*` checks); `count` and `total`.
    Devices,
    /// Pass or fail; the entry has `count` (findings) and no `total`.
    Count,
    /// Pass or fail, nothing more.
    Plain,
    /// Retired: a profile (with `deprecated: true`) but never scored.
    Deprecated,
}

impl Kind {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "on" => Kind::On,
            "users" => Kind::Users,
            "devices" => Kind::Devices,
            "count" => Kind::Count,
            "plain" => Kind::Plain,
            "deprecated" => Kind::Deprecated,
            _ => return None,
        })
    }

    /// Whether snapshots score it as a share (`count` of `total`) rather than pass or fail.
    pub fn is_share(self) -> bool {
        matches!(self, Kind::Users | Kind::Devices)
    }
}

/// One control of the catalogue (the columns of `catalogue.tsv`).
#[derive(Debug)]
pub(crate) struct CatalogueControl {
    /// `controlName` in snapshots, `id` in profiles.
    pub id: &'static str,
    /// `Identity`, `Data`, `Device`, `Apps` or `Infrastructure`.
    pub category: &'static str,
    /// The profile's `maxScore`.
    pub max_score: f64,
    /// How it is scored.
    pub kind: Kind,
    /// The profile's `service` (`AzureAD`, `MDO`, `MDATP`, …).
    pub service: &'static str,
    /// `Core`, `Defense in Depth` or `Advanced`.
    pub tier: &'static str,
    /// `Config`, `Review` or `Behavior`.
    pub action_type: &'static str,
    /// The profile's `rank` (1 is the most important).
    pub rank: u32,
    /// `implementationCost`.
    pub implementation_cost: &'static str,
    /// `userImpact`.
    pub user_impact: &'static str,
    /// `threats`, `;`-separated in the file.
    pub threats: Vec<&'static str>,
    /// The profile's `title`.
    pub title: &'static str,
    /// The snapshot entry's `description` (HTML).
    pub description: &'static str,
}

/// The catalogue file.
const CATALOGUE_TSV: &str = include_str!("catalogue.tsv");

static CATALOGUE: LazyLock<Vec<CatalogueControl>> = LazyLock::new(|| parse(CATALOGUE_TSV));

/// Every control, in the file's order (categories in blocks, the anchor of each first).
pub(crate) fn catalogue() -> &'static [CatalogueControl] {
    &CATALOGUE
}

/// Whether control number `number` is the first of its category: every tenant has those, so
/// that every snapshot covers the five categories.
pub(crate) fn is_anchor(number: usize) -> bool {
    let controls = catalogue();
    let Some(this) = controls.get(number) else {
        return false;
    };
    number == 0
        || controls
            .get(number - 1)
            .is_some_and(|previous| previous.category != this.category)
}

/// The controls of `text`; a line that does not read is left out (the tests count the lines).
fn parse(text: &'static str) -> Vec<CatalogueControl> {
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &'static str) -> Option<CatalogueControl> {
    // The description is last and may hold tabs of its own, as Graph's texts do.
    let fields: Vec<&'static str> = line.splitn(13, '\t').collect();
    let [id, category, max_score, kind, service, tier, action_type, rank, cost, impact, threats, title, description] =
        fields.as_slice()
    else {
        return None;
    };
    Some(CatalogueControl {
        id,
        category,
        max_score: max_score.parse().ok()?,
        kind: Kind::parse(kind)?,
        service,
        tier,
        action_type,
        rank: rank.parse().ok()?,
        implementation_cost: cost,
        user_impact: impact,
        threats: threats.split(';').filter(|t| !t.is_empty()).collect(),
        title,
        description,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_line_reads_and_ids_are_unique() {
        let lines = CATALOGUE_TSV
            .lines()
            .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
            .count();
        assert_eq!(catalogue().len(), lines);
        let ids: BTreeSet<&str> = catalogue().iter().map(|c| c.id).collect();
        assert_eq!(ids.len(), lines);
    }

    #[test]
    fn the_catalogue_covers_the_five_categories_in_blocks_with_scid_device_controls() {
        let mut categories: Vec<&str> = catalogue().iter().map(|c| c.category).collect();
        categories.dedup();
        assert_eq!(
            categories,
            ["Identity", "Data", "Device", "Apps", "Infrastructure"]
        );
        let anchors: Vec<usize> = (0..catalogue().len()).filter(|n| is_anchor(*n)).collect();
        assert_eq!(anchors.len(), 5);
        assert!(anchors
            .iter()
            .all(|n| catalogue()[*n].kind != Kind::Deprecated));
        assert!(catalogue()
            .iter()
            .filter(|c| c.category == "Device")
            .all(|c| c.id.starts_with("scid_") && c.kind == Kind::Devices));
        let scored = catalogue()
            .iter()
            .filter(|c| c.kind != Kind::Deprecated)
            .count();
        assert!(scored >= 80, "{scored}: room for tenants of 60–80 controls");
    }
}
