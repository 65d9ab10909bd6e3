//! The emulated directory: tenants generated from a seed, their app registrations and
//! credentials, and the selection of which tenants get which fault profile and credential kind.
//!
//! Owns naming (Microsoft's sample company names, deterministic and independent of the seed),
//! seeded generation (ids, secrets, base scores) and lookups by slug, tenant id or
//! `{slug}.onmicrosoft.com`. It does not serve anything: the handlers read it.

use super::faults::FaultProfile;
use super::options::{CredentialKind, EmulatorOptions, Selector};
use super::tls::AppCertificate;
use super::EmulatorError;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use uuid::Uuid;

/// Microsoft's fictitious sample companies, in the order tenants are named.
const SAMPLE_SLUGS: &[&str] = &[
    "contoso",
    "fabrikam",
    "northwind",
    "litware",
    "adatum",
    "tailspin",
    "wingtip",
    "woodgrove",
    "proseware",
    "relecloud",
    "lucerne",
    "trey-research",
    "fourth-coffee",
    "alpine-ski-house",
    "coho-winery",
    "blue-yonder",
    "wide-world-importers",
    "margies-travel",
    "humongous-insurance",
    "vanarsdel",
    "lamna",
    "bellows-college",
    "southridge-video",
    "consolidated-messenger",
    "first-up-consultants",
    "graphic-design-institute",
    "city-power-and-light",
    "school-of-fine-art",
    "munson-pickles",
    "nod-publishers",
    "best-for-you-organics",
    "contoso-pharmaceuticals",
    "world-wide-importers",
    "datum-corporation",
    "baldwin-museum",
    "fineartschool",
    "adventure-works",
    "wingtip-toys",
    "tailwind-traders",
    "northwind-traders",
];

/// Tiers given round-robin by tenant index.
const TIERS: [&str; 3] = ["gold", "silver", "bronze"];

/// The slug of tenant number `index` (0-based): `contoso`, …, then `contoso-2`, `fabrikam-2`, ….
pub(crate) fn slug_for(index: usize) -> String {
    let base = SAMPLE_SLUGS[index % SAMPLE_SLUGS.len()];
    match index / SAMPLE_SLUGS.len() {
        0 => base.to_owned(),
        round => format!("{base}-{}", round + 1),
    }
}

/// Display name from a slug: `trey-research` → `Trey Research`, `contoso-2` → `Contoso 2`.
pub(crate) fn display_name(slug: &str) -> String {
    slug.split('-')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<String>>()
        .join(" ")
}

/// SplitMix64 over a list of words: the one hash behind every seeded value, so that each value
/// depends only on (seed, what, which) and not on the order things are generated in.
pub(crate) fn mix(parts: &[u64]) -> u64 {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for part in parts {
        state ^= *part;
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        state = z ^ (z >> 31);
    }
    state
}

pub(super) fn seeded_rng(parts: &[u64]) -> StdRng {
    StdRng::seed_from_u64(mix(parts))
}

pub(super) fn random_uuid(rng: &mut StdRng) -> Uuid {
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// A client secret in the shape Entra generates (40 characters, `Q~` at the fourth position).
pub(super) fn random_secret(rng: &mut StdRng) -> SecretString {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const BODY: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.~-";
    let mut secret = String::with_capacity(40);
    for _ in 0..3 {
        secret.push(char::from(ALNUM[rng.random_range(0..ALNUM.len())]));
    }
    secret.push(char::from(b'0' + rng.random_range(0..10u8)));
    secret.push_str("Q~");
    for _ in 0..34 {
        secret.push(char::from(BODY[rng.random_range(0..BODY.len())]));
    }
    SecretString::from(secret)
}

/// A tenant as the library API hands it out (for tests and the gateway configuration).
#[derive(Debug, Clone)]
pub struct EmulatedTenant {
    /// URL-safe id, also the gateway's tenant id in the written configuration (`contoso`).
    pub slug: String,
    /// Display name (`Contoso`).
    pub name: String,
    /// Entra tenant id.
    pub tenant_id: Uuid,
    /// Client (application) id registered in the tenant: its own app, or the shared MSP app.
    pub client_id: Uuid,
    /// What the client must present to the token endpoint.
    pub credential: TenantCredential,
    /// The tenant's current fault profile.
    pub fault: Option<FaultProfile>,
    /// Tier (`gold`, `silver`, `bronze`) plus the fault profile's name, if any.
    pub tags: Vec<String>,
}

impl EmulatedTenant {
    /// The credential kind (secret, certificate or shared).
    pub fn credential_kind(&self) -> CredentialKind {
        self.credential.kind()
    }
}

/// A tenant's credential. Secret material is wrapped so that `Debug` never shows it.
#[derive(Debug, Clone)]
pub enum TenantCredential {
    /// The tenant's own app registration with this client secret.
    Secret(SecretString),
    /// The MSP's multi-tenant app's secret (the same for every shared tenant).
    SharedSecret(SecretString),
    /// The tenant's own app registration with an RSA certificate.
    Certificate(CertificateCredential),
}

impl TenantCredential {
    /// The kind of credential.
    pub fn kind(&self) -> CredentialKind {
        match self {
            TenantCredential::Secret(_) => CredentialKind::Secret,
            TenantCredential::SharedSecret(_) => CredentialKind::Shared,
            TenantCredential::Certificate(_) => CredentialKind::Certificate,
        }
    }

    /// The client secret, for secret and shared tenants.
    pub fn secret(&self) -> Option<&SecretString> {
        match self {
            TenantCredential::Secret(secret) | TenantCredential::SharedSecret(secret) => {
                Some(secret)
            }
            TenantCredential::Certificate(_) => None,
        }
    }

    /// The certificate, for certificate tenants.
    pub fn certificate(&self) -> Option<&CertificateCredential> {
        match self {
            TenantCredential::Certificate(certificate) => Some(certificate),
            _ => None,
        }
    }
}

/// A certificate credential: the self-signed certificate registered on the tenant's app and
/// its private key.
#[derive(Clone)]
pub struct CertificateCredential {
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// The RSA private key, PKCS#8 PEM.
    pub private_key_pem: SecretString,
    /// SHA-1 thumbprint, base64url without padding: the JWT `x5t` header value.
    pub x5t: String,
    /// SHA-256 thumbprint, base64url without padding: the JWT `x5t#S256` header value.
    pub x5t_s256: String,
}

impl CertificateCredential {
    /// Certificate then key in one PEM document (what `secrets/{slug}.pem` holds).
    pub fn pem_bundle(&self) -> SecretString {
        let mut bundle = self.certificate_pem.clone();
        if !bundle.ends_with('\n') {
            bundle.push('\n');
        }
        bundle.push_str(self.private_key_pem.expose_secret());
        SecretString::from(bundle)
    }
}

impl fmt::Debug for CertificateCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateCredential")
            .field("x5t", &self.x5t)
            .finish_non_exhaustive()
    }
}

impl From<&AppCertificate> for CertificateCredential {
    fn from(certificate: &AppCertificate) -> Self {
        Self {
            certificate_pem: certificate.certificate_pem.clone(),
            private_key_pem: certificate.private_key_pem.clone(),
            x5t: certificate.x5t(),
            x5t_s256: certificate.x5t_s256(),
        }
    }
}

/// The MSP's multi-tenant app (used by `shared` tenants).
pub(crate) struct MspApp {
    /// Its client id.
    pub client_id: Uuid,
    /// Its one secret.
    pub secret: SecretString,
}

/// One tenant as the server sees it.
pub(crate) struct TenantRecord {
    /// Position in the directory (and in the stats tables).
    pub index: usize,
    /// URL-safe id.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Entra tenant id.
    pub tenant_id: Uuid,
    /// `{slug}.onmicrosoft.com`, which Entra accepts in place of the tenant id.
    pub domain: String,
    /// The client id registered (own app or consented MSP app) in this tenant.
    pub client_id: Uuid,
    /// Object id of the app's service principal in this tenant (the token's `oid`).
    pub object_id: Uuid,
    /// How the app authenticates.
    pub kind: CredentialKind,
    /// The expected client secret (secret and shared tenants).
    pub secret: Option<SecretString>,
    /// The registered certificate, generated on first need: RSA key generation is the only
    /// slow part of start-up, and most runs never need most certificates.
    pub certificate: OnceLock<Arc<AppCertificate>>,
    /// Score before daily drift.
    pub base_score: f64,
    /// Tier tag.
    pub tier: &'static str,
    /// Current fault profile ([`FaultProfile::encode`]); atomic because operators change it
    /// while workers read it.
    fault: AtomicU8,
    /// Score calls that reached the flaky decision (the "call number").
    pub flaky_calls: AtomicU64,
    /// The device score an operator set ([`f64::to_bits`]), or [`NO_SCORE_OVERRIDE`]; atomic
    /// because operators change it while workers read it. Lets a test move a score across an
    /// alert's line at run time, which the daily drift cannot do on demand.
    score_override: AtomicU64,
}

/// [`TenantRecord`]'s `score_override` when none is set: a NaN pattern, never a score the
/// operator endpoint accepts (scores are finite).
const NO_SCORE_OVERRIDE: u64 = u64::MAX;

impl TenantRecord {
    /// The current fault profile.
    pub fn fault(&self) -> Option<FaultProfile> {
        FaultProfile::decode(self.fault.load(Ordering::Relaxed))
    }

    /// Changes the fault profile.
    pub fn set_fault(&self, fault: Option<FaultProfile>) {
        self.fault
            .store(FaultProfile::encode(fault), Ordering::Relaxed);
    }

    /// The device score an operator set, if any: served instead of the drifting one.
    pub fn score_override(&self) -> Option<f64> {
        match self.score_override.load(Ordering::Relaxed) {
            NO_SCORE_OVERRIDE => None,
            bits => Some(f64::from_bits(bits)),
        }
    }

    /// Sets (`Some`, finite) or clears (`None`) the device score served to every caller.
    pub fn set_score_override(&self, score: Option<f64>) {
        let bits = score
            .filter(|score| score.is_finite())
            .map_or(NO_SCORE_OVERRIDE, f64::to_bits);
        self.score_override.store(bits, Ordering::Relaxed);
    }

    /// Tags: tier, then the fault profile's name.
    pub fn tags(&self) -> Vec<String> {
        let mut tags = vec![self.tier.to_owned()];
        if let Some(fault) = self.fault() {
            tags.push(fault.as_str().to_owned());
        }
        tags
    }

    /// The certificate, generating it on first call (certificate tenants only).
    pub fn certificate(&self) -> Result<Option<Arc<AppCertificate>>, EmulatorError> {
        if self.kind != CredentialKind::Certificate {
            return Ok(None);
        }
        if let Some(existing) = self.certificate.get() {
            return Ok(Some(existing.clone()));
        }
        let generated = Arc::new(AppCertificate::generate(&self.slug)?);
        // Two callers may race; the first one stored wins and the other key is discarded.
        let _ = self.certificate.set(generated);
        Ok(self.certificate.get().cloned())
    }

    /// The public view, generating the certificate if needed.
    pub fn to_public(&self) -> Result<EmulatedTenant, EmulatorError> {
        let credential = match self.kind {
            CredentialKind::Certificate => match self.certificate()? {
                Some(certificate) => TenantCredential::Certificate(certificate.as_ref().into()),
                None => return Err(EmulatorError::Internal("certificate missing".into())),
            },
            CredentialKind::Secret | CredentialKind::Shared => {
                let secret = self
                    .secret
                    .clone()
                    .ok_or_else(|| EmulatorError::Internal("secret missing".into()))?;
                if self.kind == CredentialKind::Shared {
                    TenantCredential::SharedSecret(secret)
                } else {
                    TenantCredential::Secret(secret)
                }
            }
        };
        Ok(EmulatedTenant {
            slug: self.slug.clone(),
            name: self.name.clone(),
            tenant_id: self.tenant_id,
            client_id: self.client_id,
            credential,
            fault: self.fault(),
            tags: self.tags(),
        })
    }
}

/// Every tenant, with lookups.
pub(crate) struct Directory {
    /// The tenants, by index.
    pub tenants: Vec<TenantRecord>,
    /// The MSP's multi-tenant app.
    pub msp_app: MspApp,
    /// Lookup by tenant id.
    by_tenant_id: HashMap<Uuid, usize>,
    /// Lookup by slug and by `{slug}.onmicrosoft.com` (lowercase).
    by_name: HashMap<String, usize>,
}

impl Directory {
    /// Generates the tenants of `options` (count, seed, fault and credential selection).
    pub fn generate(options: &EmulatorOptions) -> Result<Self, EmulatorError> {
        let seed = options.seed;
        let count = options.tenants;

        struct Identity {
            slug: String,
            tenant_id: Uuid,
            client_id: Uuid,
            object_id: Uuid,
            secret: SecretString,
            base_score: f64,
        }
        let identities: Vec<Identity> = (0..count)
            .map(|index| {
                let mut rng = seeded_rng(&[seed, 0x007E_4A47, index as u64]);
                let tenant_id = random_uuid(&mut rng);
                let client_id = random_uuid(&mut rng);
                let object_id = random_uuid(&mut rng);
                let secret = random_secret(&mut rng);
                let base_score = (rng.random_range(18_000..82_000) as f64) / 100.0;
                Identity {
                    slug: slug_for(index),
                    tenant_id,
                    client_id,
                    object_id,
                    secret,
                    base_score,
                }
            })
            .collect();

        let mut by_tenant_id = HashMap::with_capacity(count);
        let mut by_name = HashMap::with_capacity(count * 2);
        for (index, identity) in identities.iter().enumerate() {
            by_tenant_id.insert(identity.tenant_id, index);
            by_name.insert(identity.slug.clone(), index);
            by_name.insert(format!("{}.onmicrosoft.com", identity.slug), index);
        }
        let lookup = |name: &str| -> Option<usize> {
            match Uuid::parse_str(name) {
                Ok(id) => by_tenant_id.get(&id).copied(),
                Err(_) => by_name.get(&name.to_ascii_lowercase()).copied(),
            }
        };

        let faults: Vec<(FaultProfile, &Selector)> = options
            .faults
            .iter()
            .map(|assignment| (assignment.profile, &assignment.selector))
            .collect();
        let fault_of = select(count, &[seed, 0xFA17], &faults, "fault", &lookup)?;
        let kinds: Vec<(CredentialKind, &Selector)> = options
            .credentials
            .iter()
            .map(|assignment| (assignment.kind, &assignment.selector))
            .collect();
        let kind_of = select(count, &[seed, 0xC4ED], &kinds, "credential", &lookup)?;

        let mut msp_rng = seeded_rng(&[seed, 0x3D5B]);
        let msp_app = MspApp {
            client_id: random_uuid(&mut msp_rng),
            secret: random_secret(&mut msp_rng),
        };

        let tenants = identities
            .into_iter()
            .enumerate()
            .map(|(index, identity)| {
                let kind = kind_of[index].unwrap_or(CredentialKind::Secret);
                let (client_id, secret) = match kind {
                    CredentialKind::Secret => (identity.client_id, Some(identity.secret)),
                    CredentialKind::Shared => (msp_app.client_id, Some(msp_app.secret.clone())),
                    CredentialKind::Certificate => (identity.client_id, None),
                };
                TenantRecord {
                    index,
                    name: display_name(&identity.slug),
                    domain: format!("{}.onmicrosoft.com", identity.slug),
                    slug: identity.slug,
                    tenant_id: identity.tenant_id,
                    client_id,
                    object_id: identity.object_id,
                    kind,
                    secret,
                    certificate: OnceLock::new(),
                    base_score: identity.base_score,
                    tier: TIERS[index % TIERS.len()],
                    fault: AtomicU8::new(FaultProfile::encode(fault_of[index])),
                    flaky_calls: AtomicU64::new(0),
                    score_override: AtomicU64::new(NO_SCORE_OVERRIDE),
                }
            })
            .collect();

        Ok(Self {
            tenants,
            msp_app,
            by_tenant_id,
            by_name,
        })
    }

    /// A tenant by slug or tenant id (case-insensitive).
    pub fn find(&self, name: &str) -> Option<&TenantRecord> {
        let index = match Uuid::parse_str(name) {
            Ok(id) => self.by_tenant_id.get(&id).copied(),
            Err(_) => self.by_name.get(&name.to_ascii_lowercase()).copied(),
        }?;
        self.tenants.get(index)
    }

    /// A tenant by the token endpoint's path segment: tenant id or `{slug}.onmicrosoft.com`
    /// (Entra does not know the gateway's slugs).
    pub fn find_authority_tenant(&self, segment: &str) -> Option<&TenantRecord> {
        match Uuid::parse_str(segment) {
            Ok(id) => self.by_tenant_id(id),
            Err(_) if segment.contains('.') => self
                .by_name
                .get(&segment.to_ascii_lowercase())
                .and_then(|index| self.tenants.get(*index)),
            Err(_) => None,
        }
    }

    /// A tenant by tenant id.
    pub fn by_tenant_id(&self, id: Uuid) -> Option<&TenantRecord> {
        self.by_tenant_id
            .get(&id)
            .and_then(|index| self.tenants.get(*index))
    }
}

/// Decides which tenants get which value: named tenants first, then each fraction in order
/// among the tenants still free, in an order shuffled from the seed.
fn select<T: Copy + PartialEq + fmt::Display>(
    count: usize,
    salt: &[u64],
    assignments: &[(T, &Selector)],
    option: &'static str,
    lookup: &dyn Fn(&str) -> Option<usize>,
) -> Result<Vec<Option<T>>, EmulatorError> {
    let mut chosen: Vec<Option<T>> = vec![None; count];
    for (value, selector) in assignments {
        if let Selector::Tenants(names) = selector {
            for name in names {
                let index = lookup(name).ok_or_else(|| EmulatorError::UnknownTenant {
                    option,
                    name: name.clone(),
                })?;
                match chosen[index] {
                    Some(existing) if existing != *value => {
                        return Err(EmulatorError::InvalidOption {
                            option,
                            reason: format!("tenant {name} is given both {existing} and {value}"),
                        })
                    }
                    _ => chosen[index] = Some(*value),
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..count).collect();
    order.shuffle(&mut seeded_rng(salt));
    let free: Vec<usize> = order
        .into_iter()
        .filter(|index| chosen[*index].is_none())
        .collect();
    let mut next = free.into_iter();
    for (value, selector) in assignments {
        if let Selector::Fraction(share) = selector {
            let wanted = (share * count as f64).round() as usize;
            for index in next.by_ref().take(wanted) {
                chosen[index] = Some(*value);
            }
        }
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests;
