//! Where requests come from: networks a key may be used from, and the client's address
//! behind trusted proxies.
//!
//! A key may carry [`Networks`] (`allowed_networks`: up to 16 IPv4 or IPv6 CIDRs); a
//! request with it from an address outside them is refused 403 `network_not_allowed`,
//! after the permission check and before the limit. The client's address is the
//! connection's (axum's `ConnectInfo<SocketAddr>`, or a `SocketAddr` in the request's
//! extensions), unless the profile names [trusted proxies](crate::Profile::trusted_proxies):
//! then it is the right-most address of `X-Forwarded-For` that is not a trusted proxy (the
//! connection's when the header is absent; the left-most when every hop is trusted). A
//! forwarded header from a peer that is not a trusted proxy is ignored. A request whose
//! address cannot be told (no connection address, a hop that is no address) is outside
//! every list.
//!
//! ```
//! use nouvel_auth::network::Networks;
//!
//! let office = Networks::parse(["203.0.113.0/24", "2001:db8::/32", "198.51.100.7"]).unwrap();
//! assert!(office.contains("203.0.113.9".parse().unwrap()));
//! assert!(office.contains("198.51.100.7".parse().unwrap()));
//! assert!(!office.contains("198.51.100.8".parse().unwrap()));
//! // An IPv4 client seen through an IPv6 socket is still in an IPv4 network.
//! assert!(office.contains("::ffff:203.0.113.9".parse().unwrap()));
//! assert_eq!(office.to_strings(), ["203.0.113.0/24", "2001:db8::/32", "198.51.100.7/32"]);
//!
//! // Host bits set: the writer meant another network, or a host.
//! assert!(Networks::parse(["10.1.2.3/16"]).is_err());
//! ```

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
};

use http::{HeaderMap, Request};
use ipnet::IpNet;

/// The most networks a key may carry.
pub const MAX_KEY_NETWORKS: usize = 16;

/// A non-empty list of IPv4 and IPv6 networks.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Networks(Box<[IpNet]>);

/// Why a text is not a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidNetwork {
    /// Not an address or `address/prefix`.
    #[error("'{0}' is not an IPv4 or IPv6 address or network (CIDR)")]
    Malformed(String),
    /// Bits set past the prefix (`10.1.2.3/16`).
    #[error("'{given}' has host bits set: the network is {network}")]
    HostBits {
        /// As given.
        given: String,
        /// The network it lies in.
        network: String,
    },
    /// No network at all.
    #[error("at least one network is required")]
    Empty,
}

impl Networks {
    /// The networks `texts` name: each an address (one host) or `address/prefix` with no
    /// bit set past the prefix.
    ///
    /// # Errors
    ///
    /// The first text that is not such a network, or no text at all.
    pub fn parse<T: AsRef<str>>(
        texts: impl IntoIterator<Item = T>,
    ) -> Result<Self, InvalidNetwork> {
        let networks = texts
            .into_iter()
            .map(|text| text.as_ref().parse::<Network>().map(|n| n.0))
            .collect::<Result<Vec<_>, _>>()?;
        if networks.is_empty() {
            return Err(InvalidNetwork::Empty);
        }
        Ok(Self(networks.into()))
    }

    /// Whether `address` is in one of the networks (an IPv4-mapped IPv6 address as the
    /// IPv4 address it maps).
    #[must_use]
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.0.iter().any(|network| network.contains(&address))
    }

    /// How many networks.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never: a list holds one network at least.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each network as `address/prefix`, in order.
    #[must_use]
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

impl fmt::Debug for Networks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(ToString::to_string))
            .finish()
    }
}

impl serde::Serialize for Networks {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(ToString::to_string))
    }
}

/// One network, as [`Networks::parse`] reads it.
struct Network(IpNet);

impl FromStr for Network {
    type Err = InvalidNetwork;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let network = match text.parse::<IpNet>() {
            Ok(network) => network,
            Err(_) => text
                .parse::<IpAddr>()
                .map(IpNet::from)
                .map_err(|_| InvalidNetwork::Malformed(text.to_owned()))?,
        };
        if network.trunc() != network {
            return Err(InvalidNetwork::HostBits {
                given: text.to_owned(),
                network: network.trunc().to_string(),
            });
        }
        Ok(Self(network))
    }
}

/// The client address of `request`, as [the module](self) says: the connection's, or behind
/// `trusted` proxies the right-most forwarded address that is not one. `None` when it
/// cannot be told. Reads no header unless the connection comes from a trusted proxy, and
/// allocates nothing.
pub(crate) fn client_address<B>(
    request: &Request<B>,
    trusted: Option<&Networks>,
) -> Option<IpAddr> {
    let extensions = request.extensions();
    let peer = extensions.get::<SocketAddr>().copied();
    #[cfg(feature = "axum")]
    let peer = peer.or_else(|| {
        extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|info| info.0)
    });
    let peer = peer?.ip().to_canonical();
    match trusted {
        Some(trusted) if trusted.contains(peer) => {
            forwarded_client(request.headers(), trusted, peer)
        }
        _ => Some(peer),
    }
}

/// The right-most address of `X-Forwarded-For` (its headers in order, each left to right)
/// that is not `trusted`; the left-most if every one is; `peer` if there is none.
fn forwarded_client(headers: &HeaderMap, trusted: &Networks, peer: IpAddr) -> Option<IpAddr> {
    let mut client = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        for hop in value.to_str().ok()?.rsplit(',') {
            let hop = hop.trim().parse::<IpAddr>().ok()?.to_canonical();
            if !trusted.contains(hop) {
                return Some(hop);
            }
            client = hop;
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(peer: &str, forwarded: &[&str]) -> Request<()> {
        let mut request = Request::new(());
        request
            .extensions_mut()
            .insert(SocketAddr::new(peer.parse().unwrap(), 443));
        for value in forwarded {
            request
                .headers_mut()
                .append("x-forwarded-for", value.parse().unwrap());
        }
        request
    }

    fn client(peer: &str, forwarded: &[&str], trusted: Option<&Networks>) -> Option<String> {
        client_address(&request(peer, forwarded), trusted).map(|ip| ip.to_string())
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_hop_behind_trusted_proxies() {
        let proxies = Networks::parse(["10.0.0.0/8", "fd00::/8"]).unwrap();
        let trusted = Some(&proxies);
        // No trusted proxies: the connection's address, whatever the header says.
        assert_eq!(
            client("10.0.0.1", &["1.2.3.4"], None).as_deref(),
            Some("10.0.0.1")
        );
        // From an untrusted peer the header is ignored.
        assert_eq!(
            client("5.6.7.8", &["1.2.3.4"], trusted).as_deref(),
            Some("5.6.7.8")
        );
        // Through proxies: the right-most hop that is not one of them.
        assert_eq!(
            client("10.0.0.1", &["1.2.3.4, 9.9.9.9, 10.0.0.2"], trusted).as_deref(),
            Some("9.9.9.9")
        );
        // Several headers are one list, in order.
        assert_eq!(
            client("10.0.0.1", &["1.2.3.4", "10.0.0.3"], trusted).as_deref(),
            Some("1.2.3.4")
        );
        // Every hop trusted: the left-most; no header: the peer.
        assert_eq!(
            client("10.0.0.1", &["10.0.0.5, 10.0.0.2"], trusted).as_deref(),
            Some("10.0.0.5")
        );
        assert_eq!(
            client("10.0.0.1", &[], trusted).as_deref(),
            Some("10.0.0.1")
        );
        // IPv6 peers and IPv4-mapped hops.
        assert_eq!(
            client("fd00::1", &["::ffff:1.2.3.4"], trusted).as_deref(),
            Some("1.2.3.4")
        );
        // A hop that is no address: the client cannot be told.
        assert_eq!(client("10.0.0.1", &["1.2.3.4, garbage"], trusted), None);
        // No connection address at all.
        assert_eq!(client_address(&Request::new(()), trusted), None);
    }

    #[test]
    fn networks_are_parsed_strictly() {
        assert_eq!(
            Networks::parse(["10.1.2.3/16"]),
            Err(InvalidNetwork::HostBits {
                given: "10.1.2.3/16".into(),
                network: "10.1.0.0/16".into()
            })
        );
        assert!(matches!(
            Networks::parse(["10.0.0.0/33"]),
            Err(InvalidNetwork::Malformed(_))
        ));
        assert!(matches!(
            Networks::parse(["example.com"]),
            Err(InvalidNetwork::Malformed(_))
        ));
        assert_eq!(
            Networks::parse(Vec::<&str>::new()),
            Err(InvalidNetwork::Empty)
        );
        let host = Networks::parse(["2001:db8::1"]).unwrap();
        assert_eq!(host.to_strings(), ["2001:db8::1/128"]);
        assert!(host.contains("2001:db8::1".parse().unwrap()));
        assert!(!host.contains("2001:db8::2".parse().unwrap()));
    }
}
