//! The azure_identity credential for one app registration: a `ClientSecretCredential`, or a
//! `ClientAssertionCredential` whose assertions [`Certificate`] signs in Rust, always over our
//! transport, with the authority host from our configuration and azure_core's retries off.
//!
//! It deliberately does not cache tokens ([`super::TokenSource`] does) and does
//! not read Entra's answers ([`super::entra`] does).

use super::entra::{first_sentence, innermost, EntraErrors};
use super::TokenError;
use crate::credential::{token_endpoint, Certificate, Credential};
use crate::tenants::Tenant;
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::error::ErrorKind;
use azure_core::http::{ClientMethodOptions, ClientOptions, RetryOptions, Transport};
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions,
    ClientSecretCredential, ClientSecretCredentialOptions,
};
use secrecy::ExposeSecret;
use std::fmt;
use std::sync::Arc;

/// azure_identity's credential for the tenant, with our transport and cloud and no retries.
pub(super) fn build_credential(
    tenant: &Tenant,
    transport: &Transport,
) -> Result<Arc<dyn TokenCredential>, TokenError> {
    let mut cloud = CustomConfiguration::default();
    // Always Custom: the authority host comes from our configuration (which resolved the
    // cloud table) in every cloud, never from azure_core's defaults or the environment.
    cloud.authority_host = tenant.authority_host.as_str().to_owned();
    let client_options = ClientOptions {
        cloud: Some(Arc::new(CloudConfiguration::Custom(cloud))),
        transport: Some(transport.clone()),
        retry: RetryOptions::none(),
        per_try_policies: vec![Arc::new(EntraErrors)],
        ..Default::default()
    };
    let built: azure_core::Result<Arc<dyn TokenCredential>> = match &tenant.credential {
        Credential::Secret(secret) => ClientSecretCredential::new(
            &tenant.tenant_id,
            tenant.client_id.clone(),
            Secret::new(secret.expose_secret().to_owned()),
            Some(ClientSecretCredentialOptions { client_options }),
        )
        .map(|credential| credential as Arc<dyn TokenCredential>),
        Credential::Certificate(certificate) => {
            let audience =
                token_endpoint(&tenant.authority_host, &tenant.tenant_id).map_err(|_| {
                    TokenError::Invalid {
                        detail: "the tenant id does not fit in a token endpoint URL".into(),
                    }
                })?;
            let assertion = CertificateAssertion {
                certificate: certificate.clone(),
                audience: audience.into(),
                client_id: tenant.client_id.clone(),
            };
            ClientAssertionCredential::new(
                tenant.tenant_id.clone(),
                tenant.client_id.clone(),
                assertion,
                Some(ClientAssertionCredentialOptions { client_options }),
            )
            .map(|credential| credential as Arc<dyn TokenCredential>)
        }
    };
    built.map_err(|error| TokenError::Invalid {
        detail: first_sentence(&innermost(&error).to_string()),
    })
}

/// Signs a fresh client assertion for every token request (azure_identity asks once per
/// request, and tokens are cached, so this is about once an hour per tenant).
struct CertificateAssertion {
    certificate: Arc<Certificate>,
    /// The tenant's token endpoint: the assertion's `aud`.
    audience: String,
    client_id: String,
}

impl fmt::Debug for CertificateAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAssertion")
            .field("thumbprint", &self.certificate.thumbprint())
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl ClientAssertion for CertificateAssertion {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        self.certificate
            .client_assertion(&self.audience, &self.client_id)
            .map_err(|error| {
                azure_core::Error::with_message(ErrorKind::Credential, error.to_string())
            })
    }
}
