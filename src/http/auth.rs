//! Bearer-token or basic auth on every endpoint but the probes and `/metrics`, with the
//! credentials of the endpoint's group (`config::EndpointGroup`), compared in constant time.

use actix_web::http::{header, StatusCode};
use actix_web::HttpRequest;
use base64::Engine;

use super::error::ApiError;
use crate::config::{AuthConfig, AuthMode, EndpointGroup};

/// Checks the request's Authorization header against the credentials of `group`.
pub fn check(req: &HttpRequest, cfg: &AuthConfig, group: EndpointGroup) -> Result<(), ApiError> {
    let (mode, username, secret) = cfg.credentials(group);
    if mode == AuthMode::None {
        return Ok(());
    }
    let denied = || ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong credentials");
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(denied)?;
    let (scheme, rest) = value.split_once(' ').ok_or_else(denied)?;
    let ok = match mode {
        AuthMode::None => true,
        AuthMode::Bearer => {
            scheme.eq_ignore_ascii_case("bearer")
                && constant_time_eq(rest.trim().as_bytes(), secret.expose().as_bytes())
        }
        AuthMode::Basic => {
            let expected = format!("{username}:{}", secret.expose());
            let given = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .unwrap_or_default();
            scheme.eq_ignore_ascii_case("basic") && constant_time_eq(&given, expected.as_bytes())
        }
    };
    if ok {
        Ok(())
    } else {
        Err(denied())
    }
}

/// Equal-length inputs take the same time whatever their content; only the length leaks.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
