//! The admin-consent URL of a tenant's app registration, in the tenant's cloud.

use crate::tenants::Tenant;
use url::Url;

/// The admin-consent URL of the tenant's app in its cloud:
/// `{authority_host}/{tenant_id}/adminconsent?client_id={client_id}` (and `redirect_uri` when
/// given). An administrator of the customer tenant who opens it and accepts grants the app every
/// application permission its registration asks for (Entra's "admin consent" endpoint); a
/// multi-tenant app gets its service principal in that tenant at the same time.
///
/// The authority host is the tenant's own (`login.microsoftonline.com` for commercial and GCC,
/// `login.microsoftonline.us` for GCC High and DoD, the configured one for `custom`).
pub fn admin_consent_url(tenant: &Tenant, redirect_uri: Option<&str>) -> String {
    let mut url: Url = (*tenant.authority_host).clone();
    // A host configured with a path (`https://login.example/base/`) keeps it.
    if let Ok(mut segments) = url.path_segments_mut() {
        segments
            .pop_if_empty()
            .push(&tenant.tenant_id)
            .push("adminconsent");
    }
    url.set_query(None);
    url.set_fragment(None);
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("client_id", &tenant.client_id);
        if let Some(redirect_uri) = redirect_uri {
            query.append_pair("redirect_uri", redirect_uri);
        }
    }
    url.into()
}
