//! TLS helpers shared by the store connections: one crypto provider for the process, and a
//! plain-words diagnosis of a failed handshake.
//!
//! The `redis`, `sqlx` and `reqwest` crates all speak TLS through rustls. Start-up errors of a
//! handshake arrive wrapped several layers deep and worded for rustls developers
//! (`invalid peer certificate: UnknownIssuer`); [`diagnose`] turns them into the one sentence
//! an operator needs, naming the setting to check, and never includes the URL.

/// Installs aws-lc-rs as the process's rustls crypto provider (idempotent). The `redis` crate
/// builds its TLS configuration with the process default, which rustls can only pick by
/// itself while exactly one provider is compiled in; installing it makes that independent of
/// which features other crates enable.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // A concurrent caller may win the race; either way one provider is installed.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}

/// What went wrong in a TLS handshake, in plain words, if `err` (or a cause of it) is a
/// certificate or handshake failure. `ca_setting` names where the trusted CA comes from,
/// e.g. `LEADQ_REDIS_CA_FILE`.
pub fn diagnose(err: &(dyn std::error::Error + 'static), ca_setting: &str) -> Option<String> {
    let mut chain = String::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        chain.push_str(&e.to_string());
        chain.push('\n');
        cur = e.source();
    }
    let c = chain.to_ascii_lowercase();
    let what = if c.contains("unknownissuer") || c.contains("unknown issuer") {
        format!("the server's certificate is not signed by a trusted CA (check {ca_setting})")
    } else if c.contains("expired") || c.contains("notvalidyet") || c.contains("not valid yet") {
        "the server's certificate has expired (or is not yet valid)".to_owned()
    } else if c.contains("notvalidforname") || c.contains("not valid for name") {
        "the server's certificate is not valid for the host name in the URL".to_owned()
    } else if c.contains("certificaterequired") || c.contains("certificate required") {
        "the server requires a client certificate (set the client certificate and key)".to_owned()
    } else if c.contains("badcertificate") || c.contains("unknownca") || c.contains("unknown ca") {
        "the server rejected our client certificate".to_owned()
    } else if c.contains("invalid peer certificate") || c.contains("invalidcertificate") {
        format!("the server's certificate was refused (check {ca_setting})")
    } else if c.contains("corrupt message") || c.contains("invalidcontenttype") {
        "the server does not speak TLS on that port".to_owned()
    } else if c.contains("tls") && (c.contains("handshake") || c.contains("ssl")) {
        "the TLS handshake failed".to_owned()
    } else {
        return None;
    };
    Some(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_wording_becomes_one_sentence_naming_the_setting() {
        let e = std::io::Error::other("invalid peer certificate: UnknownIssuer");
        assert_eq!(
            diagnose(&e, "LEADQ_PG_CA_FILE or sslrootcert").unwrap(),
            "the server's certificate is not signed by a trusted CA (check LEADQ_PG_CA_FILE or sslrootcert)"
        );
        let e = std::io::Error::other(
            "invalid peer certificate: certificate not valid for name \"db\"; certificate is only valid for DnsName(\"x\")",
        );
        assert!(diagnose(&e, "X").unwrap().contains("host name"));
        let e = std::io::Error::other("connection refused");
        assert_eq!(diagnose(&e, "X"), None);
    }
}
