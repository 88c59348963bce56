//! The bearer token of a request, parsed by the filter's own code.

use axum::http::HeaderMap;

/// The token of an `authorization: Bearer <token>` header (scheme case-insensitive).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    airlock_filter::jwt::bearer_token(value).ok()
}

/// Request headers holding just `authorization: <value>`, for tests.
#[cfg(test)]
pub(crate) fn authorization(value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = axum::http::HeaderValue::from_str(value) {
        h.insert(axum::http::header::AUTHORIZATION, v);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_of(value: &str) -> Option<String> {
        bearer(&authorization(value)).map(str::to_string)
    }

    #[test]
    fn takes_the_token_of_a_bearer_header_only() {
        assert_eq!(token_of("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(token_of("bearer  abc ").as_deref(), Some("abc"));
        assert_eq!(token_of("Basic abc"), None);
        assert_eq!(token_of("Bearer "), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
