//! HTTP/1.x request and status lines from the first bytes of a message (httparse). The
//! kernel copies at most 512 bytes of a request and 64 of a response; a request whose header
//! block is cut before its Host is `unparsed`, never guessed.

/// Longest path kept (the query string is dropped first).
const PATH_MAX: usize = 80;
const HEADERS_MAX: usize = 48;
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Without the query string, cut to 80 bytes.
    pub path: String,
    /// Empty when the request has none (HTTP/1.0).
    pub host: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response { status: u16 },
    /// The HTTP/2 connection preface (h2c with prior knowledge, or h2 inside TLS).
    H2Preface,
    /// A request whose header block goes on in the next segment: wait for it.
    Incomplete,
    /// Not a message that can be read: why.
    Unparsed(&'static str),
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parse the first bytes of a message. `cut`: the sender's payload went on past `bytes`
/// (the copy limit), so an unfinished header block will not be completed.
pub fn parse(bytes: &[u8], cut: bool) -> Message {
    if bytes.starts_with(H2_PREFACE) {
        return Message::H2Preface;
    }
    if bytes.starts_with(b"HTTP/") {
        return response(bytes);
    }
    request(bytes, cut)
}

fn response(bytes: &[u8]) -> Message {
    let Some(end) = find(bytes, b"\r\n") else { return Message::Unparsed("status line cut") };
    let mut block = bytes[..end].to_vec();
    block.extend_from_slice(b"\r\n\r\n");
    let mut headers = [httparse::EMPTY_HEADER; 1];
    let mut r = httparse::Response::new(&mut headers);
    match r.parse(&block) {
        Ok(httparse::Status::Complete(_)) => match r.code {
            Some(status) if (100..600).contains(&status) => Message::Response { status },
            _ => Message::Unparsed("bad status code"),
        },
        _ => Message::Unparsed("bad status line"),
    }
}

fn request(bytes: &[u8], cut: bool) -> Message {
    // The whole header block, or what came of it, up to its last complete line.
    let (block, complete) = match find(bytes, b"\r\n\r\n") {
        Some(end) => (bytes[..end + 4].to_vec(), true),
        None => match bytes.iter().rposition(|&b| b == b'\n') {
            Some(last) => {
                let mut b = bytes[..=last].to_vec();
                b.extend_from_slice(b"\r\n");
                (b, false)
            }
            None if cut => return Message::Unparsed("request line longer than the copy"),
            None => return Message::Incomplete,
        },
    };
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut r = httparse::Request::new(&mut headers);
    match r.parse(&block) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Message::Unparsed("request line cut"),
        Err(httparse::Error::TooManyHeaders) => return Message::Unparsed("more than 48 headers"),
        Err(_) => return Message::Unparsed("not an HTTP/1.x request"),
    }
    let host = r.headers.iter().find(|h| h.name.eq_ignore_ascii_case("host")).map(|h| String::from_utf8_lossy(h.value).trim().to_owned());
    let host = match host {
        Some(h) => h,
        None if complete => String::new(),
        None if cut => return Message::Unparsed("header block cut before Host"),
        None => return Message::Incomplete,
    };
    let raw = r.path.unwrap_or("");
    let path = raw.split(['?', '#']).next().unwrap_or("");
    let mut end = path.len().min(PATH_MAX);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    Message::Request(Request { method: r.method.unwrap_or("").to_owned(), path: path[..end].to_owned(), host })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(m: &str, p: &str, h: &str) -> Message {
        Message::Request(Request { method: m.into(), path: p.into(), host: h.into() })
    }

    #[test]
    fn requests_keep_method_path_without_query_and_host() {
        let m = parse(b"GET /api/v1/items?id=7&x=y HTTP/1.1\r\nHost: api.internal\r\nAccept: */*\r\n\r\n", false);
        assert_eq!(m, req("GET", "/api/v1/items", "api.internal"));
        let m = parse(b"POST /checkout HTTP/1.1\r\nhost:  shop:8080 \r\nContent-Length: 4\r\n\r\nbody", false);
        assert_eq!(m, req("POST", "/checkout", "shop:8080"));
        // HTTP/1.0 without Host: parsed, with no Host.
        assert_eq!(parse(b"GET / HTTP/1.0\r\n\r\n", false), req("GET", "/", ""));
        let long = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(300));
        let Message::Request(r) = parse(long.as_bytes(), false) else { panic!() };
        assert_eq!(r.path.len(), 80);
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse(b"HTTP/1.1 502 Bad Gateway\r\nServer: nginx\r\nContent-Ty", true), Message::Response { status: 502 });
        assert_eq!(parse(b"HTTP/1.0 200 OK\r\n", false), Message::Response { status: 200 });
        assert_eq!(parse(b"HTTP/1.1 5", true), Message::Unparsed("status line cut"));
        assert_eq!(parse(b"HTTP/1.1 abc Nope\r\n", false), Message::Unparsed("bad status line"));
        assert_eq!(parse(b"HTTP/1.1 999 Nope\r\n", false), Message::Unparsed("bad status code"));
    }

    #[test]
    fn a_header_block_cut_before_host_is_unparsed_and_one_that_goes_on_waits() {
        let head = format!("GET /x HTTP/1.1\r\nCookie: {}\r\nX-A: b", "c".repeat(400));
        assert_eq!(parse(head.as_bytes(), true), Message::Unparsed("header block cut before Host"));
        assert_eq!(parse(head.as_bytes(), false), Message::Incomplete);
        // Host before the cut: parsed.
        let head = format!("GET /x HTTP/1.1\r\nHost: h\r\nCookie: {}", "c".repeat(400));
        assert_eq!(parse(head.as_bytes(), true), req("GET", "/x", "h"));
        assert_eq!(parse(b"GET /very-long-path-without-end", true), Message::Unparsed("request line longer than the copy"));
        assert_eq!(parse(b"GET /split", false), Message::Incomplete);
    }

    #[test]
    fn preface_garbage_and_binary_are_unparsed_or_incomplete() {
        assert_eq!(parse(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false), Message::H2Preface);
        assert_eq!(parse(b"GET \x00\x01\x02\xff\xfe\r\n\r\n", false), Message::Unparsed("not an HTTP/1.x request"));
        assert_eq!(parse(b"GET / HTTP/9.9\r\n\r\n", false), Message::Unparsed("not an HTTP/1.x request"));
        // Every prefix of a request and random bytes after a method: no panic.
        let full = b"GET /a?b HTTP/1.1\r\nHost: h\xc3\xa9\r\nX: \xff\r\n\r\n";
        for n in 0..=full.len() {
            // A prefix still going on is incomplete, never a request with a made-up Host.
            match parse(&full[..n], false) {
                Message::Incomplete | Message::Unparsed(_) => {}
                // Once the Host line is whole (30 bytes in), the request is known.
                Message::Request(r) => assert!(n >= 30 && r.host == "hé", "prefix {n}: {r:?}"),
                other => panic!("prefix {n}: {other:?}"),
            }
        }
        let mut x: u32 = 1;
        for _ in 0..2000 {
            let mut b = b"POST ".to_vec();
            for _ in 0..64 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                b.push(x as u8);
            }
            // No "\r\n\r\n" in 64 random bytes is likely; either way no request comes of it
            // unless it really has a request line.
            let got = parse(&b, x.is_multiple_of(2));
            assert!(!matches!(got, Message::Response { .. } | Message::H2Preface), "{b:?}: {got:?}");
            b[..5].copy_from_slice(b"HTTP/");
            let got = parse(&b, true);
            assert!(!matches!(got, Message::Request(_) | Message::H2Preface), "{b:?}: {got:?}");
        }
    }
}
