//! Where a webhook may be delivered. By default a delivery goes to public addresses only: not
//! to loopback, private, link-local, shared (CGNAT), cloud metadata or other special-purpose
//! addresses, which a webhook URL could otherwise use to reach the gateway's own network.
//! Plain `http://` goes to loopback only (a local receiver), as configuration allows. A
//! `[[webhooks]]` entry with `allow_private_addresses = true` may go anywhere.
//!
//! Checked twice: on the configured URL (an address literal, at load, naming the key), and at
//! every delivery on each address the host resolves to, by the resolver of the client that then
//! connects to exactly those addresses, so that a name cannot resolve to a public address for
//! the check and a private one for the connection (DNS rebinding). A delivery refused for its
//! address fails at once, with the reason in `last_error`; it is not retried.
//!
//! For the same reason a checked delivery connects **directly**, never through a proxy of the
//! environment (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`): through a proxy, the client resolves
//! and connects to the proxy's address, and the check would judge the proxy, not the webhook —
//! every public webhook refused behind a proxy on a private address, or any target reachable
//! behind a public one. An entry with `allow_private_addresses = true` is not checked and uses
//! the environment's proxy like every other outbound call.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Which addresses a delivery may connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Public addresses only: any `https://` endpoint by default.
    Public,
    /// Loopback only: `http://` endpoints (configuration allows them to loopback hosts only).
    Loopback,
    /// Anywhere: the entry sets `allow_private_addresses = true`.
    Any,
}

impl Reach {
    /// The reach of an endpoint at `url`.
    pub fn of(url: &url::Url, allow_private_addresses: bool) -> Self {
        if allow_private_addresses {
            Self::Any
        } else if url.scheme() == "http" {
            Self::Loopback
        } else {
            Self::Public
        }
    }

    /// Why `address` is out of reach, or `None` when a delivery may connect to it.
    pub fn refuses(self, address: IpAddr) -> Option<RefusedAddress> {
        let refused = |reason: &'static str| {
            Some(RefusedAddress {
                address,
                reason,
                reach: self,
            })
        };
        match self {
            Self::Any => None,
            Self::Loopback if address.is_loopback() => None,
            Self::Loopback => refused("not a loopback address"),
            Self::Public => special(address).and_then(refused),
        }
    }

    /// Why the address literal of `url` is out of reach (`None` for a name, or in reach).
    pub fn refuses_literal(self, url: &url::Url) -> Option<RefusedAddress> {
        match url.host()? {
            url::Host::Ipv4(address) => self.refuses(IpAddr::V4(address)),
            url::Host::Ipv6(address) => self.refuses(IpAddr::V6(address)),
            url::Host::Domain(_) => None,
        }
    }
}

/// A delivery's address was out of reach: the address, what it is, and the setting that
/// would allow it. No URL or host name (a URL may hold a token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct RefusedAddress {
    /// The address refused.
    pub address: IpAddr,
    /// What it is (`a private address`, `the cloud metadata address`, …).
    pub reason: &'static str,
    reach: Reach,
}

impl RefusedAddress {
    fn describe(&self) -> String {
        match self.reach {
            Reach::Loopback => format!(
                "{} is {}: plain http:// webhooks go to loopback addresses only",
                self.address, self.reason
            ),
            _ => format!(
                "{} is {}: webhooks go to public addresses only \
                 (allow_private_addresses = true in the [[webhooks]] entry allows it)",
                self.address, self.reason
            ),
        }
    }
}

/// What `address` is when it is not a public unicast address, or `None` when it is.
pub fn special(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(address) => special_v4(address),
        IpAddr::V6(address) => special_v6(address),
    }
}

/// Whether `address` is in `network`/`prefix`.
fn within_v4(address: Ipv4Addr, network: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(address) & mask == u32::from(Ipv4Addr::from(network)) & mask
}

fn special_v4(address: Ipv4Addr) -> Option<&'static str> {
    // Cloud metadata first: they are also link-local (AWS, GCP, Azure's IMDS) or public
    // (Azure's WireServer), and the reason should say what they are.
    if address == Ipv4Addr::new(169, 254, 169, 254) || address == Ipv4Addr::new(168, 63, 129, 16) {
        return Some("a cloud metadata address");
    }
    let table: [(bool, &'static str); 12] = [
        (
            within_v4(address, [0, 0, 0, 0], 8),
            "an unspecified address",
        ),
        (address.is_loopback(), "a loopback address"),
        (address.is_private(), "a private address"),
        (
            within_v4(address, [100, 64, 0, 0], 10),
            "a shared (CGNAT) address",
        ),
        (address.is_link_local(), "a link-local address"),
        (
            within_v4(address, [192, 0, 0, 0], 24),
            "an IETF protocol address",
        ),
        (address.is_documentation(), "a documentation address"),
        (
            within_v4(address, [198, 18, 0, 0], 15),
            "a benchmarking address",
        ),
        (address.is_multicast(), "a multicast address"),
        (address.is_broadcast(), "the broadcast address"),
        (within_v4(address, [240, 0, 0, 0], 4), "a reserved address"),
        (
            within_v4(address, [192, 88, 99, 0], 24),
            "a relay (6to4) address",
        ),
    ];
    table
        .into_iter()
        .find_map(|(matches, reason)| matches.then_some(reason))
}

fn special_v6(address: Ipv6Addr) -> Option<&'static str> {
    // An IPv4 address inside an IPv6 one (mapped, or NAT64's well-known prefix) is that address.
    if let Some(v4) = address.to_ipv4_mapped() {
        return special_v4(v4);
    }
    let segments = address.segments();
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b] = segments[6].to_be_bytes();
        let [c, d] = segments[7].to_be_bytes();
        return special_v4(Ipv4Addr::new(a, b, c, d));
    }
    // AWS's IMDS over IPv6 (inside fc00::/7, named for what it is).
    if address == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Some("a cloud metadata address");
    }
    let table: [(bool, &'static str); 9] = [
        (address.is_unspecified(), "an unspecified address"),
        (address.is_loopback(), "a loopback address"),
        // ::/96 (IPv4-compatible, deprecated) and the rest of ::/8.
        (segments[0] == 0, "a reserved address"),
        (
            address.is_unique_local(),
            "a private (unique local) address",
        ),
        (address.is_unicast_link_local(), "a link-local address"),
        (segments[0] & 0xffc0 == 0xfec0, "a site-local address"),
        (address.is_multicast(), "a multicast address"),
        (
            segments[0] == 0x2001 && segments[1] == 0x0db8,
            "a documentation address",
        ),
        (segments[0] == 0x2002, "a 6to4 address"),
    ];
    table
        .into_iter()
        .find_map(|(matches, reason)| matches.then_some(reason))
}

/// Resolves like the system (getaddrinfo, through tokio) and refuses the whole name when any
/// address it resolves to is out of reach: the client connects only to what this returns.
#[derive(Debug)]
struct GuardedResolver(Reach);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let reach = self.0;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(refused) = addresses
                .iter()
                .find_map(|address| reach.refuses(address.ip()))
            {
                return Err(Box::new(refused) as Box<dyn std::error::Error + Send + Sync>);
            }
            let addresses: Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}

/// The webhook clients, one per [`Reach`]: each resolves through its own guard.
#[derive(Debug, Clone)]
pub struct WebhookClients {
    public: reqwest::Client,
    loopback: reqwest::Client,
    any: reqwest::Client,
}

impl WebhookClients {
    /// Builds the three clients from `builder` (called three times: the gateway's TLS roots,
    /// user agent, timeouts, no redirects followed), each with its guard; the two guarded ones
    /// without any proxy (see the module's documentation).
    pub fn build(
        builder: impl Fn() -> Result<reqwest::ClientBuilder, reqwest::Error>,
    ) -> Result<Self, reqwest::Error> {
        let guarded = |reach| {
            builder().and_then(|builder| {
                builder
                    .no_proxy()
                    .dns_resolver(Arc::new(GuardedResolver(reach)))
                    .build()
            })
        };
        Ok(Self {
            public: guarded(Reach::Public)?,
            loopback: guarded(Reach::Loopback)?,
            any: builder()?.build()?,
        })
    }

    /// The client of `reach`.
    pub fn client(&self, reach: Reach) -> &reqwest::Client {
        match reach {
            Reach::Public => &self.public,
            Reach::Loopback => &self.loopback,
            Reach::Any => &self.any,
        }
    }
}

/// The refusal in `error`'s chain, if the resolver refused the delivery's address.
pub fn refusal(error: &(dyn std::error::Error + 'static)) -> Option<RefusedAddress> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(refused) = error.downcast_ref::<RefusedAddress>() {
            return Some(refused.clone());
        }
        current = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback server answering every connection `204` once; its URL.
    fn answering_once() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            if let Ok((mut stream, _)) = listener.accept() {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
            }
        });
        format!("http://{address}/hook")
    }

    #[tokio::test]
    async fn a_checked_delivery_goes_direct_whatever_proxy_the_environment_sets() {
        // A proxy as `HTTP_PROXY` would set it (the variables themselves are process-wide):
        // a name nobody resolves, so a request through it cannot succeed.
        let clients = WebhookClients::build(|| {
            Ok(reqwest::Client::builder()
                .proxy(reqwest::Proxy::all("http://proxy.invalid:3128")?)
                .timeout(std::time::Duration::from_secs(10)))
        })
        .unwrap();
        let answer = clients
            .client(Reach::Loopback)
            .post(answering_once())
            .send()
            .await
            .expect("delivered directly, not through the proxy");
        assert_eq!(answer.status().as_u16(), 204);
        // The unchecked client keeps the proxy (the address behind it is never reached).
        assert!(clients
            .client(Reach::Any)
            .post("http://127.0.0.1:1/hook")
            .send()
            .await
            .is_err());
    }

    fn refused(reach: Reach, text: &str) -> Option<&'static str> {
        reach
            .refuses(text.parse().unwrap())
            .map(|refused| refused.reason)
    }

    #[test]
    fn public_reach_refuses_every_special_purpose_address() {
        for (address, reason) in [
            ("169.254.169.254", "a cloud metadata address"),
            ("168.63.129.16", "a cloud metadata address"),
            ("fd00:ec2::254", "a cloud metadata address"),
            ("10.0.0.1", "a private address"),
            ("172.16.0.1", "a private address"),
            ("172.31.255.255", "a private address"),
            ("192.168.1.1", "a private address"),
            ("127.0.0.1", "a loopback address"),
            ("127.8.9.10", "a loopback address"),
            ("0.0.0.0", "an unspecified address"),
            ("0.1.2.3", "an unspecified address"),
            ("100.64.0.1", "a shared (CGNAT) address"),
            ("100.127.255.255", "a shared (CGNAT) address"),
            ("169.254.0.1", "a link-local address"),
            ("192.0.2.1", "a documentation address"),
            ("198.18.0.1", "a benchmarking address"),
            ("224.0.0.1", "a multicast address"),
            ("255.255.255.255", "the broadcast address"),
            ("240.0.0.1", "a reserved address"),
            ("::", "an unspecified address"),
            ("::1", "a loopback address"),
            ("::ffff:10.0.0.1", "a private address"),
            ("::ffff:169.254.169.254", "a cloud metadata address"),
            ("64:ff9b::a00:1", "a private address"),
            ("::10.0.0.1", "a reserved address"),
            ("fc00::1", "a private (unique local) address"),
            ("fd12:3456::1", "a private (unique local) address"),
            ("fe80::1", "a link-local address"),
            ("fec0::1", "a site-local address"),
            ("ff02::1", "a multicast address"),
            ("2001:db8::1", "a documentation address"),
        ] {
            assert_eq!(refused(Reach::Public, address), Some(reason), "{address}");
            assert_eq!(refused(Reach::Any, address), None, "{address}");
        }
        for address in [
            "1.1.1.1",
            "20.42.65.92",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(refused(Reach::Public, address), None, "{address}");
        }
    }

    #[test]
    fn loopback_reach_allows_loopback_only() {
        assert_eq!(refused(Reach::Loopback, "127.0.0.1"), None);
        assert_eq!(refused(Reach::Loopback, "::1"), None);
        for address in ["10.0.0.1", "1.1.1.1", "169.254.169.254"] {
            assert_eq!(
                refused(Reach::Loopback, address),
                Some("not a loopback address"),
                "{address}"
            );
        }
        let text = Reach::Loopback
            .refuses("8.8.8.8".parse().unwrap())
            .unwrap()
            .to_string();
        assert_eq!(
            text,
            "8.8.8.8 is not a loopback address: plain http:// webhooks go to loopback addresses only"
        );
    }

    #[test]
    fn literals_are_checked_and_names_left_to_the_resolver() {
        let url = |text: &str| url::Url::parse(text).unwrap();
        assert!(Reach::Public
            .refuses_literal(&url("https://[fe80::1]/hook"))
            .is_some());
        assert!(Reach::Public
            .refuses_literal(&url("https://0xa9.254.169.254/"))
            .is_some());
        assert!(Reach::Public
            .refuses_literal(&url("https://hooks.example.com/"))
            .is_none());
        assert_eq!(
            Reach::of(&url("http://127.0.0.1:9/"), false),
            Reach::Loopback
        );
        assert_eq!(Reach::of(&url("https://10.0.0.1/"), true), Reach::Any);
        assert_eq!(Reach::of(&url("https://10.0.0.1/"), false), Reach::Public);
    }
}
