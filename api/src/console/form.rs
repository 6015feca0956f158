//! URL-encoded form bodies as the console's forms send them. Fields may repeat (the job ids
//! ticked in a list), so a body is read as name/value pairs rather than into a struct; a value
//! PostgreSQL cannot store (NUL) or that is not UTF-8 refuses the whole form, at the edge.

use axum::extract::{FromRequest, Request};
use axum::http::header;

use crate::error::ApiError;

/// The most a console form may weigh: a page of ticked job ids is far below it.
const MAX_BYTES: usize = 256 * 1024;

/// A form's fields, in order.
#[derive(Debug, Clone, Default)]
pub struct Form(pub Vec<(String, String)>);

impl Form {
    /// The first value of `name`, trimmed; `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Every value of `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl<S: Send + Sync> FromRequest<S> for Form {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let urlencoded = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !urlencoded {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|_| ApiError::PayloadTooLarge)?;
        parse(&bytes)
    }
}

/// The fields of `bytes`, or why they are refused.
pub fn parse(bytes: &[u8]) -> Result<Form, ApiError> {
    if bytes.len() > MAX_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    let mut fields = Vec::new();
    for pair in bytes.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let (name, value) = (decode(name)?, decode(value)?);
        if name.contains('\0') || value.contains('\0') {
            return Err(ApiError::UnsupportedCharacter(name));
        }
        fields.push((name, value));
    }
    Ok(Form(fields))
}

/// One percent-encoded field (`+` is a space), refused unless it decodes to UTF-8.
fn decode(raw: &[u8]) -> Result<String, ApiError> {
    let spaced: Vec<u8> = raw
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    percent_encoding::percent_decode(&spaced)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ApiError::BadRequest)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn repeated_fields_and_hostile_bytes() {
        let f = parse(b"job_id=a&job_id=b&action=redrive&empty=").unwrap();
        assert_eq!(f.all("job_id").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(f.get("action"), Some("redrive"));
        assert_eq!(f.get("empty"), None);
        assert_eq!(
            parse(b"token=%00").unwrap_err().code(),
            "unsupported_character"
        );
        assert_eq!(parse(b"token=%ff").unwrap_err().code(), "bad_request");
        assert_eq!(parse(b"q=a+b%2Bc").unwrap().get("q"), Some("a b+c"));
    }
}
