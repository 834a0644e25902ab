//! Where a token or a credential may travel: over https, or over plain http only to this machine.
//!
//! Every endpoint we send a bearer token, a client secret or the managed-identity header to passes
//! this check before it is used (settings at start-up, the identity endpoint when first used); URLs
//! taken from requests or metadata are checked more strictly still (see [`super::keyvault`]).

use std::net::IpAddr;

/// How far a plain-http endpoint may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlainHttp {
    /// Only to a loopback address (`127.0.0.0/8`, `::1`, `localhost`).
    Loopback,
    /// Also to a link-local address (`169.254.0.0/16`, `fe80::/10`): App Service's local token service.
    LoopbackOrLinkLocal,
}

/// Why an endpoint may not carry a credential; `None` when it may.
pub fn refusal(url: &url::Url, plain_http: PlainHttp) -> Option<String> {
    if !url.username().is_empty() || url.password().is_some() {
        return Some("must not carry user information".into());
    }
    match url.scheme() {
        "https" => None,
        "http" => {
            let local = match url.host() {
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => local_ip(IpAddr::V4(ip), plain_http),
                Some(url::Host::Ipv6(ip)) => local_ip(IpAddr::V6(ip), plain_http),
                None => false,
            };
            (!local).then(|| match plain_http {
                PlainHttp::Loopback => "plain http is allowed only to a loopback address".into(),
                PlainHttp::LoopbackOrLinkLocal => {
                    "plain http is allowed only to a loopback or link-local address".into()
                }
            })
        }
        other => Some(format!("must be an https URL, not {other}")),
    }
}

fn local_ip(ip: IpAddr, plain_http: PlainHttp) -> bool {
    let link_local = plain_http == PlainHttp::LoopbackOrLinkLocal;
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || (link_local && v4.is_link_local()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => local_ip(IpAddr::V4(v4), plain_http),
            None => v6.is_loopback() || (link_local && (v6.segments()[0] & 0xffc0) == 0xfe80),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, plain: PlainHttp) -> Option<String> {
        refusal(&url::Url::parse(text).expect("url"), plain)
    }

    #[test]
    fn https_anywhere_http_only_locally() {
        use PlainHttp::*;
        assert_eq!(check("https://management.azure.com", Loopback), None);
        assert_eq!(check("http://127.0.0.1:8080", Loopback), None);
        assert_eq!(check("http://127.9.9.9", Loopback), None);
        assert_eq!(check("http://[::1]:81/x", Loopback), None);
        assert_eq!(check("http://localhost:7071", Loopback), None);
        assert!(check("http://169.254.169.254/metadata", Loopback).is_some());
        assert_eq!(
            check("http://169.254.129.3:8081/msi/token", LoopbackOrLinkLocal),
            None
        );
        assert_eq!(
            check("http://[fe80::1]/msi/token", LoopbackOrLinkLocal),
            None
        );
        for refused in [
            "http://10.0.0.1",
            "http://192.168.1.1",
            "http://[fd00::1]",
            "http://management.azure.com",
            "http://localhost.evil.example",
            "ftp://127.0.0.1",
            "https://user:pw@management.azure.com",
        ] {
            assert!(check(refused, LoopbackOrLinkLocal).is_some(), "{refused}");
        }
    }
}
