//! TLS for the MySQL/MariaDB connections (rustls), chosen by the URL's `ssl-mode`, as the
//! MySQL client names it:
//! - `DISABLED` (default): plain TCP;
//! - `REQUIRED`: encrypted, the certificate is not verified;
//! - `VERIFY_CA`: the chain is verified against `ssl-ca=/path/ca.pem`, which it requires, the
//!   host name is not (libmysql would take the system's CA store without `ssl-ca`: then any
//!   publicly trusted certificate of any host would pass);
//! - `VERIFY_IDENTITY`: the chain (against `ssl-ca`, or the Mozilla roots without it) and the
//!   host name are verified.
//!
//! `ssl-mode` and `ssl-ca` are taken off the URL before the driver reads the rest.

use std::path::PathBuf;

use mysql_async::{Opts, OptsBuilder, SslOpts};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disabled,
    Required,
    VerifyCa,
    VerifyIdentity,
}

/// The URL without the TLS settings, and the settings. Errors name the parameter only (the
/// URL holds the password).
pub fn split_url(url: &str) -> Result<(String, SslMode, Option<PathBuf>), String> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut mode = None;
    let mut ca = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("ssl-mode" | "ssl_mode", value)) => {
                mode = Some(match value.to_ascii_uppercase().as_str() {
                    "DISABLED" => SslMode::Disabled,
                    "REQUIRED" => SslMode::Required,
                    "VERIFY_CA" => SslMode::VerifyCa,
                    "VERIFY_IDENTITY" => SslMode::VerifyIdentity,
                    _ => {
                        return Err(format!(
                            "ssl-mode={value} is not supported; use DISABLED, REQUIRED, VERIFY_CA or VERIFY_IDENTITY"
                        ))
                    }
                })
            }
            Some(("ssl-ca" | "ssl_ca", path)) => ca = Some(PathBuf::from(path)),
            _ => rest.push(pair),
        }
    }
    let mode = mode.unwrap_or(SslMode::Disabled);
    if ca.is_some() && matches!(mode, SslMode::Disabled | SslMode::Required) {
        return Err("ssl-ca is only used with ssl-mode=VERIFY_CA or VERIFY_IDENTITY".into());
    }
    if ca.is_none() && mode == SslMode::VerifyCa {
        return Err("ssl-mode=VERIFY_CA needs ssl-ca=/path/to/ca.pem (the CA that signed the server's certificate); or use VERIFY_IDENTITY, which also checks the host name".into());
    }
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, mode, ca))
}

/// The driver's options for `url`, TLS included.
pub fn opts(url: &str) -> Result<Opts, String> {
    let (url, mode, ca) = split_url(url)?;
    let opts = Opts::from_url(&url).map_err(|e| e.to_string())?;
    if mode != SslMode::Disabled {
        // The driver builds its rustls config from the process-wide provider; two are
        // compiled in (the AWS SDK brings aws-lc-rs), so one must be chosen. Later calls are
        // no-ops.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let ssl = match mode {
        SslMode::Disabled => return Ok(opts),
        SslMode::Required => SslOpts::default()
            .with_danger_accept_invalid_certs(true)
            .with_danger_skip_domain_validation(true),
        SslMode::VerifyCa | SslMode::VerifyIdentity => {
            let ssl = match ca {
                Some(ca) => {
                    if !ca.is_file() {
                        return Err(format!("ssl-ca={} is not a readable file", ca.display()));
                    }
                    SslOpts::default()
                        .with_root_certs(vec![ca.into()])
                        .with_disable_built_in_roots(true)
                }
                // VERIFY_IDENTITY only (split_url requires ssl-ca for VERIFY_CA).
                None => SslOpts::default(),
            };
            ssl.with_danger_skip_domain_validation(mode == SslMode::VerifyCa)
        }
    };
    Ok(OptsBuilder::from_opts(opts).ssl_opts(ssl).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_come_off_the_url() {
        let (url, mode, ca) = split_url(
            "mysql://u:p@h:3306/app?ssl-mode=verify_identity&ssl-ca=/ca.pem&prefer_socket=false",
        )
        .unwrap();
        assert_eq!(url, "mysql://u:p@h:3306/app?prefer_socket=false");
        assert_eq!(mode, SslMode::VerifyIdentity);
        assert_eq!(ca, Some(PathBuf::from("/ca.pem")));
        assert_eq!(
            split_url("mysql://u:p@h/app").unwrap(),
            ("mysql://u:p@h/app".into(), SslMode::Disabled, None)
        );
        let err = split_url("mysql://u:secret@h/app?ssl-mode=PREFERRED").unwrap_err();
        assert!(err.contains("ssl-mode=PREFERRED is not supported") && !err.contains("secret"));
        assert!(split_url("mysql://u@h/app?ssl-ca=/ca.pem").is_err());
        assert!(split_url("mysql://u@h/app?ssl-mode=VERIFY_CA")
            .unwrap_err()
            .contains("VERIFY_CA needs ssl-ca"));
    }

    #[test]
    fn modes_become_driver_options() {
        let required = opts("mysql://u@h/app?ssl-mode=REQUIRED").unwrap();
        let ssl = required.ssl_opts().expect("TLS on");
        assert!(ssl.accept_invalid_certs() && ssl.skip_domain_validation());
        let verified = opts("mysql://u@h/app?ssl-mode=VERIFY_IDENTITY").unwrap();
        let ssl = verified.ssl_opts().expect("TLS on");
        assert!(!ssl.accept_invalid_certs() && !ssl.skip_domain_validation());
        assert!(opts("mysql://u@h/app").unwrap().ssl_opts().is_none());
        assert!(
            opts("mysql://u@h/app?ssl-mode=VERIFY_CA&ssl-ca=/nonexistent.pem")
                .unwrap_err()
                .contains("not a readable file")
        );
    }
}
