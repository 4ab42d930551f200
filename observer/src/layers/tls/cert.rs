//! What a TLS 1.2 server certificate says, from its DER (x509-parser): validity, names,
//! issuer. Only the leaf is judged; observer does not validate chains.

use x509_parser::{extensions::GeneralName, parse_x509_certificate};

#[derive(Debug, Clone, PartialEq)]
pub struct CertFacts {
    pub subject: String,
    pub issuer: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// DNS names (SAN), or the subject's common name when there is no SAN.
    pub names: Vec<String>,
    /// Issuer and subject are the same name.
    pub self_signed: bool,
    pub chain_len: usize,
    /// Set when the DER does not parse.
    pub error: Option<String>,
}

pub fn facts(der: &[u8], chain_len: usize) -> CertFacts {
    let mut f = CertFacts {
        subject: String::new(),
        issuer: String::new(),
        not_before: 0,
        not_after: 0,
        names: Vec::new(),
        self_signed: false,
        chain_len,
        error: None,
    };
    let cert = match parse_x509_certificate(der) {
        Ok((_, c)) => c,
        Err(e) => {
            f.error = Some(format!("certificate does not parse: {e}"));
            return f;
        }
    };
    f.subject = cert.subject().to_string();
    f.issuer = cert.issuer().to_string();
    f.not_before = cert.validity().not_before.timestamp();
    f.not_after = cert.validity().not_after.timestamp();
    f.self_signed = cert.subject() == cert.issuer();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                f.names.push(d.to_ascii_lowercase());
            }
        }
    }
    if f.names.is_empty() {
        f.names = cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(str::to_ascii_lowercase).collect();
    }
    f
}

/// Whether one of `names` covers `host` (exact, or a `*.` wildcard for one label).
pub fn covers(names: &[String], host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    names.iter().any(|n| {
        if let Some(suffix) = n.strip_prefix("*.") {
            host.split_once('.').is_some_and(|(first, rest)| !first.is_empty() && rest == suffix)
        } else {
            *n == host
        }
    })
}

/// A date as YYYY-MM-DD (UTC) from unix seconds.
pub fn date(unix: i64) -> String {
    // Civil-from-days (H. Hinnant), enough for a date in an evidence line.
    let days = unix.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label_only() {
        let names = vec!["*.good.test".to_owned(), "good.test".to_owned()];
        assert!(covers(&names, "good.test"));
        assert!(covers(&names, "api.good.test"));
        assert!(!covers(&names, "a.b.good.test"));
        assert!(!covers(&names, "bad.test"));
        assert!(!covers(&names, ".good.test"));
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(1_793_491_200), "2026-11-01");
        assert_eq!(date(951_782_400), "2000-02-29");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let f = facts(&[0x30, 0x82, 0xff, 0xff, 1, 2, 3], 1);
        assert!(f.error.is_some());
        assert!(facts(&[], 0).error.is_some());
    }
}
