//! The emulated directory under test: naming, seeded generation, lookups and fault and credential selection.

use super::*;
use crate::emulator::options::{CredentialAssignment, FaultAssignment};

#[test]
fn slugs_are_sample_names_then_numbered() {
    assert_eq!(slug_for(0), "contoso");
    assert_eq!(slug_for(11), "trey-research");
    assert_eq!(slug_for(SAMPLE_SLUGS.len()), "contoso-2");
    assert_eq!(slug_for(2 * SAMPLE_SLUGS.len() + 1), "fabrikam-3");
    assert_eq!(display_name("trey-research"), "Trey Research");
    assert_eq!(display_name("contoso-2"), "Contoso 2");
}

#[test]
fn slugs_are_unique_for_large_counts() {
    let slugs: std::collections::HashSet<String> = (0..10_000).map(slug_for).collect();
    assert_eq!(slugs.len(), 10_000);
}

#[test]
fn fractions_and_names_select_disjoint_tenants() {
    let options = EmulatorOptions {
        tenants: 20,
        faults: vec![
            "revoked=contoso,fabrikam"
                .parse::<FaultAssignment>()
                .unwrap(),
            "slow=0.25".parse().unwrap(),
            "flaky=0.1".parse().unwrap(),
        ],
        credentials: vec!["certificate=0.2".parse::<CredentialAssignment>().unwrap()],
        ..EmulatorOptions::default()
    };
    let directory = Directory::generate(&options).unwrap();
    let count = |profile| {
        directory
            .tenants
            .iter()
            .filter(|t| t.fault() == Some(profile))
            .count()
    };
    assert_eq!(count(FaultProfile::Revoked), 2);
    assert_eq!(count(FaultProfile::Slow), 5);
    assert_eq!(count(FaultProfile::Flaky), 2);
    assert_eq!(directory.tenants[0].fault(), Some(FaultProfile::Revoked));
    let certificates = directory
        .tenants
        .iter()
        .filter(|t| t.kind == CredentialKind::Certificate)
        .count();
    assert_eq!(certificates, 4);
}

#[test]
fn unknown_tenant_names_are_refused() {
    let options = EmulatorOptions {
        faults: vec!["hang=nobody".parse().unwrap()],
        ..EmulatorOptions::default()
    };
    assert!(matches!(
        Directory::generate(&options),
        Err(EmulatorError::UnknownTenant { .. })
    ));
}

#[test]
fn lookups_accept_slug_id_and_domain() {
    let directory = Directory::generate(&EmulatorOptions::default()).unwrap();
    let contoso = &directory.tenants[0];
    let id = contoso.tenant_id.to_string();
    assert_eq!(directory.find("CONTOSO").map(|t| t.index), Some(0));
    assert_eq!(directory.find(&id.to_uppercase()).map(|t| t.index), Some(0));
    assert_eq!(
        directory
            .find_authority_tenant("contoso.onmicrosoft.com")
            .map(|t| t.index),
        Some(0)
    );
    assert!(directory.find_authority_tenant("contoso").is_none());
}

#[test]
fn secrets_look_like_entra_secrets() {
    let mut rng = seeded_rng(&[1]);
    let secret = random_secret(&mut rng);
    assert_eq!(secret.expose_secret().len(), 40);
    assert_eq!(&secret.expose_secret()[4..6], "Q~");
}
