//! Step 1 of the request's path: the presented key, read from `Authorization` with no I/O.

use http::{header::AUTHORIZATION, HeaderMap};

use crate::{key::every_byte, ApiKey, KeyPrefix, Rejection};

/// The key in `Authorization: Bearer nvl_…`.
///
/// The scheme is matched case-insensitively (RFC 6750 via RFC 9110); exactly one space
/// and one token follow it. The key's format and checksum are checked here, so a made-up
/// string costs no hashing and no store lookup.
pub(crate) fn presented_key(headers: &HeaderMap, prefix: KeyPrefix) -> Result<ApiKey, Rejection> {
    prefix
        .parse_bytes(bearer_token(headers)?)
        .map_err(Rejection::MalformedApiKey)
}

/// The token of the one `Authorization: Bearer <token>` header: visible ASCII, no spaces.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<&[u8], Rejection> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(Rejection::MissingApiKey)?;
    if values.next().is_some() {
        return Err(Rejection::InvalidAuthorization);
    }
    let (scheme, token) = value
        .as_bytes()
        .split_at_checked(b"Bearer ".len())
        .ok_or(Rejection::InvalidAuthorization)?;
    if !scheme.eq_ignore_ascii_case(b"Bearer ")
        || token.is_empty()
        || !every_byte(token, u8::is_ascii_graphic)
    {
        return Err(Rejection::InvalidAuthorization);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyFormatError;
    use http::HeaderValue;

    fn parse(values: &[&[u8]]) -> Result<ApiKey, Rejection> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
        }
        presented_key(&headers, KeyPrefix::NOUVEL)
    }

    #[test]
    fn reads_one_bearer_key() {
        let key = ApiKey::generate();
        for scheme in ["Bearer", "bearer", "BEARER"] {
            let header = format!("{scheme} {}", key.expose_secret());
            assert_eq!(parse(&[header.as_bytes()]).unwrap().digest(), key.digest());
        }
    }

    #[test]
    fn names_each_failure() {
        let key = ApiKey::generate();
        let good = format!("Bearer {}", key.expose_secret());
        assert_eq!(parse(&[]).unwrap_err(), Rejection::MissingApiKey);
        for bad in [
            "Basic dXNlcjpwYXNz".as_bytes(),
            b"Bearer",
            b"Bearer ",
            b"Bearer  nvl_x",
            b"Bearernvl_abc",
            "Bearer nvl_\u{e9}".as_bytes(),
            format!("Bearer {} extra", key.expose_secret()).as_bytes(),
        ] {
            assert_eq!(
                parse(&[bad]).unwrap_err(),
                Rejection::InvalidAuthorization,
                "{bad:?}"
            );
        }
        assert_eq!(
            parse(&[good.as_bytes(), good.as_bytes()]).unwrap_err(),
            Rejection::InvalidAuthorization
        );
        assert_eq!(
            parse(&[b"Bearer nvl_short"]).unwrap_err(),
            Rejection::MalformedApiKey(KeyFormatError::Length(KeyPrefix::NOUVEL))
        );
    }
}
