//! Reading an issued chain's leaf certificate, and the renewal rule. Pure.

use super::error::clean;
use super::TlsError;
use chrono::{DateTime, TimeDelta, Utc};
use x509_cert::der::asn1::{Ia5StringRef, PrintableStringRef, Utf8StringRef};
use x509_cert::der::oid::db::rfc4519::COMMON_NAME;
use x509_cert::der::DecodePem;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::time::Time;
use x509_cert::Certificate;

/// Renew this many days before a certificate expires, unless told otherwise.
pub const DEFAULT_RENEW_DAYS: i64 = 30;

/// What a chain's leaf certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Its DNS names (and IP addresses) from subjectAltName, lowercase, in the certificate's
    /// order; the subject's common name when it has no subjectAltName.
    pub names: Vec<String>,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    /// Lowercase hex, without leading zero octets.
    pub serial: String,
    /// The issuer's distinguished name (RFC 4514).
    pub issuer: String,
    /// The subject's distinguished name (RFC 4514; empty for most ACME certificates).
    pub subject: String,
    /// How many certificates the chain holds, the leaf included.
    pub chain_len: usize,
}

fn unreadable(detail: impl std::fmt::Display) -> TlsError {
    TlsError::Certificate {
        what: "read the certificate chain".to_string(),
        detail: clean(&detail.to_string()),
    }
}

fn utc(time: Time) -> Result<DateTime<Utc>, TlsError> {
    let since = time.to_unix_duration();
    let secs = i64::try_from(since.as_secs()).map_err(|_| unreadable("a date out of range"))?;
    DateTime::from_timestamp(secs, since.subsec_nanos())
        .ok_or_else(|| unreadable("a date out of range"))
}

/// Reads the first certificate of a PEM chain (the leaf, as ACME CAs send it).
pub fn inspect(chain_pem: &str) -> Result<CertInfo, TlsError> {
    let certs = pem_certificates(chain_pem)?;
    let leaf = certs
        .first()
        .ok_or_else(|| unreadable("it holds no certificate"))?;
    let tbs = &leaf.tbs_certificate;
    let mut names = Vec::new();
    let san = tbs
        .get::<SubjectAltName>()
        .map_err(|e| unreadable(format!("subjectAltName: {e}")))?;
    if let Some((_, SubjectAltName(general))) = san {
        for name in general {
            match name {
                GeneralName::DnsName(dns) => names.push(clean(dns.as_str()).to_ascii_lowercase()),
                GeneralName::IpAddress(ip) => match ip.as_bytes().len() {
                    4 => {
                        let mut o = [0u8; 4];
                        o.copy_from_slice(ip.as_bytes());
                        names.push(std::net::Ipv4Addr::from(o).to_string());
                    }
                    16 => {
                        let mut o = [0u8; 16];
                        o.copy_from_slice(ip.as_bytes());
                        names.push(std::net::Ipv6Addr::from(o).to_string());
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    } else {
        names.extend(common_names(&tbs.subject));
    }
    let mut serial = tbs.serial_number.as_bytes();
    while serial.len() > 1 && serial[0] == 0 {
        serial = &serial[1..];
    }
    Ok(CertInfo {
        names,
        not_before: utc(tbs.validity.not_before)?,
        not_after: utc(tbs.validity.not_after)?,
        serial: serial.iter().map(|b| format!("{b:02x}")).collect(),
        issuer: clean(&tbs.issuer.to_string()),
        subject: clean(&tbs.subject.to_string()),
        chain_len: certs.len(),
    })
}

/// The CERTIFICATE blocks of a PEM text, in order (other blocks and text between them are
/// passed over).
fn pem_certificates(text: &str) -> Result<Vec<Certificate>, TlsError> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut certs = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let block = &rest[start..];
        let end = block
            .find(END)
            .ok_or_else(|| unreadable("a certificate without its END line"))?
            + END.len();
        certs.push(Certificate::from_pem(&block.as_bytes()[..end]).map_err(unreadable)?);
        rest = &block[end..];
    }
    Ok(certs)
}

fn common_names(subject: &x509_cert::name::Name) -> Vec<String> {
    let mut out = Vec::new();
    for rdn in subject.0.iter() {
        for atv in rdn.0.iter() {
            if atv.oid != COMMON_NAME {
                continue;
            }
            let text = atv
                .value
                .decode_as::<Utf8StringRef<'_>>()
                .map(|s| s.as_str().to_string())
                .or_else(|_| {
                    atv.value
                        .decode_as::<PrintableStringRef<'_>>()
                        .map(|s| s.as_str().to_string())
                })
                .or_else(|_| {
                    atv.value
                        .decode_as::<Ia5StringRef<'_>>()
                        .map(|s| s.as_str().to_string())
                });
            if let Ok(text) = text {
                out.push(clean(&text).to_ascii_lowercase());
            }
        }
    }
    out
}

/// Whether a certificate that expires at `not_after` is due for renewal at `now`: from
/// `days_before` days before it expires (negative counts as 0, so at expiry at the latest).
pub fn renew_due(not_after: DateTime<Utc>, now: DateTime<Utc>, days_before: i64) -> bool {
    // Clamped to a century so the subtraction cannot overflow.
    let window = TimeDelta::try_days(days_before.clamp(0, 36_500)).unwrap_or(TimeDelta::zero());
    match not_after.checked_sub_signed(window) {
        Some(from) => now >= from,
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 0, 0, 0)
            .single()
            .expect("date")
    }

    #[test]
    fn renewal_is_due_thirty_days_before_expiry() {
        let expiry = at(2026, 3, 31);
        assert!(!renew_due(expiry, at(2026, 2, 28), DEFAULT_RENEW_DAYS));
        assert!(!renew_due(
            expiry,
            at(2026, 3, 1) - TimeDelta::seconds(1),
            DEFAULT_RENEW_DAYS
        ));
        assert!(renew_due(expiry, at(2026, 3, 1), DEFAULT_RENEW_DAYS));
        assert!(renew_due(expiry, at(2026, 3, 30), DEFAULT_RENEW_DAYS));
        assert!(renew_due(expiry, at(2026, 4, 30), DEFAULT_RENEW_DAYS));
    }

    #[test]
    fn odd_windows_are_bounded() {
        let expiry = at(2026, 3, 31);
        // No window: due at expiry, not before.
        assert!(!renew_due(expiry, at(2026, 3, 30), 0));
        assert!(renew_due(expiry, expiry, 0));
        assert!(!renew_due(expiry, at(2026, 3, 30), -10));
        // A huge window: always due, no overflow.
        assert!(renew_due(expiry, at(2000, 1, 1), i64::MAX));
        assert!(renew_due(DateTime::<Utc>::MIN_UTC, at(2000, 1, 1), 30));
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let err = inspect("not a certificate").expect_err("garbage");
        assert!(
            err.to_string()
                .starts_with("acme: read the certificate chain:"),
            "{err}"
        );
        assert!(!err.retryable());
        let err = inspect("").expect_err("empty");
        assert!(matches!(err, TlsError::Certificate { .. }), "{err:?}");
        let err = inspect("-----BEGIN CERTIFICATE-----\nAAAA\n").expect_err("cut short");
        assert!(err.to_string().contains("without its END line"), "{err}");
        let err = inspect("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .expect_err("not DER");
        assert!(matches!(err, TlsError::Certificate { .. }), "{err:?}");
    }

    #[test]
    fn a_generated_certificate_is_read() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec![
            "mx1.example.test".to_string(),
            "192.0.2.7".to_string(),
        ])
        .expect("params");
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2026, 4, 1);
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0, 0x1f, 0xab]));
        let cert = params.self_signed(&key).expect("cert");
        let info = inspect(&cert.pem()).expect("inspect");
        assert_eq!(info.names, ["mx1.example.test", "192.0.2.7"]);
        assert_eq!(info.not_before, at(2026, 1, 1));
        assert_eq!(info.not_after, at(2026, 4, 1));
        assert_eq!(info.serial, "1fab");
        assert_eq!(info.chain_len, 1);
        let other = rcgen::CertificateParams::new(vec!["ca.example.test".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let chain = format!(
            "leaf:\r\n{}\r\nissuer:\r\n{}",
            cert.pem().replace('\n', "\r\n"),
            other.pem()
        );
        let info = inspect(&chain).expect("chain");
        assert_eq!(info.names, ["mx1.example.test", "192.0.2.7"]);
        assert_eq!(info.chain_len, 2);
        assert!(info.issuer.contains("rcgen"), "{}", info.issuer);
    }
}
