//! The server's side of the protocol, read just far enough to find `ErrorResponse`s and the
//! transaction status each `ReadyForQuery` carries.

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

/// Follows the protocol's message framing (a type byte, a 4-byte big-endian length counting
/// itself, the body) across chunks of any size.
#[derive(Default)]
struct Framing {
    header: [u8; 5],
    header_len: usize,
    remaining: usize,
    /// A length that cannot be: stop looking rather than misread everything after it.
    lost: bool,
}

/// What [`Framing::feed`] finds, in stream order.
enum Frame<'a> {
    /// A message of this type begins, with a body of this many bytes.
    Starts(u8, usize),
    /// Part of the current message's body.
    Body(&'a [u8]),
    /// The message of this type is complete.
    Ends(u8),
}

impl Framing {
    fn feed<'a>(&mut self, mut bytes: &'a [u8], mut found: impl FnMut(Frame<'a>)) {
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
                found(Frame::Starts(self.header[0], remaining));
            } else {
                let take = self.remaining.min(bytes.len());
                found(Frame::Body(&bytes[..take]));
                self.remaining -= take;
                bytes = &bytes[take..];
            }
            if self.remaining == 0 {
                found(Frame::Ends(self.header[0]));
                self.header_len = 0;
            }
        }
    }
}

/// Reads the server's messages, keeping the bodies of `ErrorResponse`s and `ReadyForQuery`s
/// only.
#[derive(Default)]
pub(super) struct Parser {
    framing: Framing,
    body: Vec<u8>,
    keep_body: bool,
    /// The status byte of the newest `ReadyForQuery` not yet taken (`I` idle, `T` in a
    /// transaction, `E` in a failed transaction), and how many were read since.
    ready: Option<(u8, u64)>,
}

impl Parser {
    pub(super) fn feed(&mut self, bytes: &[u8]) -> Vec<Parsed> {
        let mut found = Vec::new();
        let Self {
            framing,
            body,
            keep_body,
            ready,
        } = self;
        framing.feed(bytes, |frame| match frame {
            Frame::Starts(kind, length) => {
                *keep_body = match kind {
                    b'E' => length <= LONGEST_ERROR,
                    b'Z' => length == 1,
                    _ => false,
                };
                body.clear();
            }
            Frame::Body(bytes) if *keep_body => body.extend_from_slice(bytes),
            Frame::Body(_) => {}
            Frame::Ends(b'Z') if *keep_body => {
                let count = ready.map_or(0, |(_, count)| count);
                *ready = Some((body[0], count + 1));
            }
            Frame::Ends(_) if *keep_body => found.extend(parse_error_response(body)),
            Frame::Ends(_) => {}
        });
        found
    }

    /// The transaction status of the newest `ReadyForQuery` fed since the last call, and how
    /// many were fed.
    pub(super) fn take_ready(&mut self) -> Option<(u8, u64)> {
        self.ready.take()
    }

    #[cfg(test)]
    fn lost(&self) -> bool {
        self.framing.lost
    }
}

/// Counts what the client sends that the server answers with a `ReadyForQuery`: a `Sync`
/// (extended protocol) or a `Query` (simple protocol). Fed from a message boundary, once
/// start-up (whose first message has no type byte) is over.
#[derive(Default)]
pub(super) struct Requests {
    framing: Framing,
}

impl Requests {
    /// How many such messages begin in `bytes`.
    pub(super) fn feed(&mut self, bytes: &[u8]) -> u64 {
        let mut count = 0;
        self.framing.feed(bytes, |frame| {
            if let Frame::Starts(b'S' | b'Q', _) = frame {
                count += 1;
            }
        });
        count
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
    fn keeps_the_newest_transaction_status_and_counts_every_ready_for_query() {
        let mut stream = other_message(b'Z', b"I");
        stream.extend(other_message(b'C', b"BEGIN\0"));
        stream.extend(other_message(b'Z', b"T"));
        stream.extend(error_response("ERROR", "22012", "division by zero"));
        stream.extend(other_message(b'Z', b"E"));
        for chunk in [1, 2, 5, stream.len()] {
            let mut parser = Parser::default();
            let (mut newest, mut count) = (None, 0);
            for c in stream.chunks(chunk) {
                parser.feed(c);
                if let Some((status, seen)) = parser.take_ready() {
                    newest = Some(status);
                    count += seen;
                }
            }
            assert_eq!((newest, count), (Some(b'E'), 3), "chunk {chunk}");
            assert_eq!(parser.take_ready(), None, "taken once");
        }
    }

    #[test]
    fn counts_the_requests_a_server_answers_with_ready_for_query() {
        // Parse, Bind, Execute, Sync; a simple Query; a Terminate.
        let mut stream = other_message(b'P', b"\0SELECT 1\0\0\0");
        stream.extend(other_message(b'B', b"\0\0\0\0\0\0\0\0"));
        stream.extend(other_message(b'E', b"\0\0\0\0\0"));
        stream.extend(other_message(b'S', b""));
        stream.extend(other_message(b'Q', b"SELECT 1\0"));
        stream.extend(other_message(b'X', b""));
        for chunk in [1, 3, stream.len()] {
            let mut requests = Requests::default();
            let sent: u64 = stream.chunks(chunk).map(|c| requests.feed(c)).sum();
            assert_eq!(sent, 2, "chunk {chunk}");
        }
    }

    #[test]
    fn an_impossible_length_stops_the_parser() {
        let mut parser = Parser::default();
        assert!(parser.feed(&[b'E', 0, 0, 0, 1]).is_empty());
        assert!(parser.lost());
        assert!(
            parser
                .feed(&error_response("ERROR", "40001", "x"))
                .is_empty()
        );
    }
}
