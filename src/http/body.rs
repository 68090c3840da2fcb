//! Reads a request body up to a limit: 413 past it (by Content-Length when given, else while
//! streaming), without buffering more than the limit. Then undoes its Content-Encoding
//! ([`Coding`], [`inflate`]), again up to a limit.

use std::borrow::Cow;
use std::io::Read;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest};
use futures_util::StreamExt;

use super::error::ApiError;

pub async fn read_limited(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than the limit of {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(8192).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading body: {e}"), None))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A request body's Content-Encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// No header, or `identity`.
    Identity,
    /// `gzip` (or `x-gzip`).
    Gzip,
    /// `deflate`: zlib-wrapped as HTTP defines it, or raw DEFLATE as Go's readers (Loki's
    /// among them) take it; the first two bytes tell which.
    Deflate,
    /// `snappy`: Loki's clients sometimes say so of a snappy-framed protobuf push, which its
    /// decoder reads itself. Only the push endpoint accepts it, as Loki does.
    Snappy,
}

impl Coding {
    /// From the request's Content-Encoding header; Err names an encoding no endpoint reads
    /// (in Loki's words, so the push endpoint can answer as Loki does).
    pub fn of(req: &HttpRequest) -> Result<Coding, String> {
        let Some(v) = req.headers().get(header::CONTENT_ENCODING) else {
            return Ok(Coding::Identity);
        };
        let v = String::from_utf8_lossy(v.as_bytes());
        match v.trim().to_ascii_lowercase().as_str() {
            "" | "identity" => Ok(Coding::Identity),
            "gzip" | "x-gzip" => Ok(Coding::Gzip),
            "deflate" => Ok(Coding::Deflate),
            "snappy" => Ok(Coding::Snappy),
            _ => Err(format!("Content-Encoding {:?} not supported", v.trim())),
        }
    }
}

/// `body` with its gzip or deflate coding undone, at most `limit` bytes of it (413 past that,
/// so a small compressed body cannot inflate without bound); 400 when it is not what the
/// header says. Identity and snappy bodies come back as they are.
pub fn inflate(body: &[u8], coding: Coding, limit: usize) -> Result<Cow<'_, [u8]>, ApiError> {
    let reader: Box<dyn Read + '_> = match coding {
        Coding::Identity | Coding::Snappy => return Ok(Cow::Borrowed(body)),
        Coding::Gzip => Box::new(flate2::read::GzDecoder::new(body)),
        Coding::Deflate => match body {
            // A zlib header: compression method 8, and the two bytes a multiple of 31.
            [cmf, flg, ..]
                if cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0 =>
            {
                Box::new(flate2::read::ZlibDecoder::new(body))
            }
            _ => Box::new(flate2::read::DeflateDecoder::new(body)),
        },
    };
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            let name = if coding == Coding::Gzip {
                "gzip"
            } else {
                "deflate"
            };
            ApiError::bad_request(format!("body is not valid {name}: {e}"), None)
        })?;
    if out.len() > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("inflated body larger than the limit of {limit} bytes"),
        ));
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn coded(header: Option<&str>) -> Result<Coding, String> {
        let mut req = actix_web::test::TestRequest::default();
        if let Some(h) = header {
            req = req.insert_header((header::CONTENT_ENCODING, h));
        }
        Coding::of(&req.to_http_request())
    }

    #[test]
    fn content_encodings_are_read_or_named() {
        assert_eq!(coded(None), Ok(Coding::Identity));
        assert_eq!(coded(Some("identity")), Ok(Coding::Identity));
        assert_eq!(coded(Some("GZip")), Ok(Coding::Gzip));
        assert_eq!(coded(Some("deflate")), Ok(Coding::Deflate));
        assert_eq!(coded(Some("snappy")), Ok(Coding::Snappy));
        assert_eq!(
            coded(Some("br")),
            Err("Content-Encoding \"br\" not supported".into())
        );
        assert!(coded(Some("gzip, br")).is_err(), "two codings");
    }

    #[test]
    fn gzip_and_both_deflates_inflate_within_the_limit() {
        let text = b"{\"alerts\": []} ".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&text).unwrap();
        let gz = gz.finish().unwrap();
        let mut zl = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zl.write_all(&text).unwrap();
        let zl = zl.finish().unwrap();
        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(&text).unwrap();
        let raw = raw.finish().unwrap();
        assert_eq!(inflate(&gz, Coding::Gzip, 1 << 20).unwrap(), &text[..]);
        assert_eq!(inflate(&zl, Coding::Deflate, 1 << 20).unwrap(), &text[..]);
        assert_eq!(inflate(&raw, Coding::Deflate, 1 << 20).unwrap(), &text[..]);
        assert_eq!(
            inflate(b"plain", Coding::Identity, 1).unwrap(),
            &b"plain"[..]
        );

        let over = inflate(&gz, Coding::Gzip, text.len() - 1).unwrap_err();
        assert_eq!(over.status, StatusCode::PAYLOAD_TOO_LARGE);
        let bad = inflate(b"not gzip", Coding::Gzip, 1 << 20).unwrap_err();
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        assert!(
            bad.message.starts_with("body is not valid gzip"),
            "{}",
            bad.message
        );
    }
}
