//! The server's side of the protocol, read just far enough to find `ErrorResponse`s.

use super::ServerError;
use crate::sqlstate::SqlState;

/// Error messages longer than this are skipped (PostgreSQL's own are far shorter).
const LONGEST_ERROR: usize = 16 * 1024;

/// An `ErrorResponse` read off the wire.
pub(super) struct Parsed {
    pub(super) error: ServerError,
    /// Severity `FATAL` or `PANIC`: the server ends the session after it.
    pub(super) fatal: bool,
}

/// Follows the server's message framing (a type byte, a 4-byte big-endian length counting
/// itself, the body) across reads of any size, keeping the bodies of `ErrorResponse`s only.
#[derive(Default)]
pub(super) struct Parser {
    header: [u8; 5],
    header_len: usize,
    remaining: usize,
    body: Vec<u8>,
    keep_body: bool,
    /// A length that cannot be: stop looking rather than misread everything after it.
    lost: bool,
}

impl Parser {
    pub(super) fn feed(&mut self, mut bytes: &[u8]) -> Vec<Parsed> {
        let mut found = Vec::new();
        while !bytes.is_empty() && !self.lost {
            if self.header_len < self.header.len() {
                let take = (self.header.len() - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + take]
                    .copy_from_slice(&bytes[..take]);
                self.header_len += take;
                bytes = &bytes[take..];
                if self.header_len < self.header.len() {
                    break;
                }
                let length = i32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]);
                let Some(remaining) = usize::try_from(length).ok().and_then(|l| l.checked_sub(4))
                else {
                    self.lost = true;
                    break;
                };
                self.remaining = remaining;
                self.keep_body = self.header[0] == b'E' && remaining <= LONGEST_ERROR;
                self.body.clear();
            } else {
                let take = self.remaining.min(bytes.len());
                if self.keep_body {
                    self.body.extend_from_slice(&bytes[..take]);
                }
                self.remaining -= take;
                bytes = &bytes[take..];
            }
            if self.remaining == 0 {
                if self.keep_body
                    && let Some(parsed) = parse_error_response(&self.body)
                {
                    found.push(parsed);
                }
                self.header_len = 0;
                self.keep_body = false;
                self.body.clear();
            }
        }
        found
    }
}

/// The fields of an `ErrorResponse` body: pairs of a field-type byte and a NUL-terminated
/// string, ended by a zero byte.
fn parse_error_response(body: &[u8]) -> Option<Parsed> {
    let (mut code, mut message, mut severity, mut localized_severity) = (None, None, None, None);
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0)?;
        let value = &tail[..end];
        match kind {
            b'C' => code = std::str::from_utf8(value).ok().and_then(SqlState::parse),
            b'M' => message = Some(String::from_utf8_lossy(value).into_owned()),
            b'V' => severity = Some(value),
            b'S' => localized_severity = Some(value),
            _ => {}
        }
        rest = &tail[end + 1..];
    }
    // `V` is never translated; servers before 9.6 send only `S`.
    let severity = severity.or(localized_severity).unwrap_or_default();
    Some(Parsed {
        error: ServerError {
            sqlstate: code?,
            message: message?,
        },
        fatal: severity == b"FATAL" || severity == b"PANIC",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_response(severity: &str, code: &str, message: &str) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, value) in [
            (b'S', severity),
            (b'V', severity),
            (b'C', code),
            (b'M', message),
        ] {
            body.push(kind);
            body.extend_from_slice(value.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut message = vec![b'E'];
        message.extend_from_slice(&(i32::try_from(body.len() + 4).unwrap()).to_be_bytes());
        message.extend_from_slice(&body);
        message
    }

    fn other_message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut message = vec![kind];
        message.extend_from_slice(&(i32::try_from(body.len() + 4).unwrap()).to_be_bytes());
        message.extend_from_slice(body);
        message
    }

    #[test]
    fn finds_errors_between_other_messages_in_reads_of_any_size() {
        let mut stream = other_message(b'D', b"\x00\x01\x00\x00\x00\x03abc");
        stream.extend(error_response("ERROR", "55P03", "could not obtain lock"));
        stream.extend(other_message(b'Z', b"E"));
        stream.extend(error_response("FATAL", "57P01", "terminating connection"));
        for chunk in [1, 2, 3, 7, 64, stream.len()] {
            let mut parser = Parser::default();
            let found: Vec<Parsed> = stream.chunks(chunk).flat_map(|c| parser.feed(c)).collect();
            assert_eq!(found.len(), 2, "chunk {chunk}");
            assert_eq!(found[0].error.sqlstate, SqlState::LOCK_NOT_AVAILABLE);
            assert_eq!(found[0].error.message, "could not obtain lock");
            assert!(!found[0].fatal);
            assert_eq!(found[1].error.sqlstate, SqlState::ADMIN_SHUTDOWN);
            assert!(found[1].fatal);
        }
    }

    #[test]
    fn an_impossible_length_stops_the_parser() {
        let mut parser = Parser::default();
        assert!(parser.feed(&[b'E', 0, 0, 0, 1]).is_empty());
        assert!(parser.lost);
        assert!(
            parser
                .feed(&error_response("ERROR", "40001", "x"))
                .is_empty()
        );
    }
}
