//! SPDY/3.1 framing, as far as Kubernetes' stream protocols use it: `kubectl port-forward` tunnels an SPDY session
//! inside a WebSocket (subprotocol [`PORTFORWARD_TUNNEL`]), one pair of streams (data and error) per forwarded
//! connection. This is the codec: control frames (SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY,
//! HEADERS, WINDOW_UPDATE) and data frames, with their header blocks compressed by zlib with SPDY/3's dictionary,
//! as one compression stream per direction for the whole session (which is why a [`Codec`] is kept per session).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

/// The WebSocket subprotocol of SPDY tunnelled for port-forwarding (kubectl 1.31 and later ask for it first).
pub const PORTFORWARD_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

/// Frames bigger than this are refused (SPDY allows 16 MiB; nothing here sends more than a few KiB at once).
pub const MAX_FRAME: usize = 1 << 20;

/// What a frame says; header blocks as (lower-case name, value) pairs, several values of one name joined by NUL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream: u32,
        associated: u32,
        priority: u8,
        fin: bool,
        unidirectional: bool,
        headers: Vec<(String, String)>,
    },
    SynReply {
        stream: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    /// (flags, id, value) per setting.
    Settings(Vec<(u8, u32, u32)>),
    Ping(u32),
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    WindowUpdate {
        stream: u32,
        delta: u32,
    },
    Data {
        stream: u32,
        fin: bool,
        data: Vec<u8>,
    },
    /// A control frame of a type this codec does not know (SPDY says: ignore it).
    Unknown(u16),
}

/// RST_STREAM status codes used here.
pub const PROTOCOL_ERROR: u32 = 1;
pub const REFUSED_STREAM: u32 = 3;
pub const CANCEL: u32 = 5;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpdyError {
    #[error("SPDY: version {0} is not spoken here (3 is)")]
    Version(u16),
    #[error("SPDY: {0} frame is too short")]
    Short(&'static str),
    #[error("SPDY: a frame of {0} bytes is over the limit of {MAX_FRAME}")]
    TooLarge(usize),
    #[error("SPDY: header block: {0}")]
    Headers(String),
}

const FLAG_FIN: u8 = 0x01;
const FLAG_UNIDIRECTIONAL: u8 = 0x02;
const VERSION: u16 = 3;

/// SPDY/3's header compression dictionary (draft 3, section 2.6.10.1): these names and values, each preceded by
/// its length as a 32-bit big-endian number, then a run of common text. The peer's zlib checks its checksum, so
/// it must be exact.
fn dictionary() -> &'static [u8] {
    static DICT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const CODES: &str =
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417\
                             502504505";
        const REASONS: &[&str] = &[
            "203 Non-Authoritative Information",
            "204 No Content",
            "301 Moved Permanently",
            "400 Bad Request",
            "401 Unauthorized",
            "403 Forbidden",
            "404 Not Found",
            "500 Internal Server Error",
            "501 Not Implemented",
            "503 Service Unavailable",
        ];
        const TAIL: &str = "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 \
                            Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT\
                            chunked,text/html,image/png,image/jpg,image/gif,application/xml,\
                            application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=\
                            gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";
        let mut d = Vec::with_capacity(1424);
        for w in WORDS {
            d.extend((w.len() as u32).to_be_bytes());
            d.extend(w.as_bytes());
        }
        d.extend(CODES.as_bytes());
        for r in REASONS {
            d.extend(r.as_bytes());
        }
        d.extend(TAIL.as_bytes());
        d
    })
}

/// One SPDY session's framing state: the two header compression streams.
pub struct Codec {
    inflate: Decompress,
    deflate: Compress,
}

impl Default for Codec {
    fn default() -> Self {
        Codec::new()
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn need(payload: &[u8], len: usize, what: &'static str) -> Result<(), SpdyError> {
    if payload.len() < len {
        return Err(SpdyError::Short(what));
    }
    Ok(())
}

impl Codec {
    pub fn new() -> Codec {
        let mut deflate = Compress::new(Compression::best(), true);
        deflate
            .set_dictionary(dictionary())
            .expect("a new compressor takes a dictionary");
        Codec {
            inflate: Decompress::new(true),
            deflate,
        }
    }

    /// Takes one whole frame off the front of `buf`, if it holds one.
    pub fn decode(&mut self, buf: &mut Vec<u8>) -> Result<Option<Frame>, SpdyError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = (u32_at(buf, 4) & 0x00ff_ffff) as usize;
        if len > MAX_FRAME {
            return Err(SpdyError::TooLarge(len));
        }
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let frame: Vec<u8> = buf.drain(..8 + len).collect();
        let flags = frame[4];
        let payload = &frame[8..];
        if frame[0] & 0x80 == 0 {
            return Ok(Some(Frame::Data {
                stream: u32_at(&frame, 0) & 0x7fff_ffff,
                fin: flags & FLAG_FIN != 0,
                data: payload.to_vec(),
            }));
        }
        let version = u16::from_be_bytes([frame[0] & 0x7f, frame[1]]);
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let stream = |what| need(payload, 4, what).map(|_| u32_at(payload, 0) & 0x7fff_ffff);
        let fin = flags & FLAG_FIN != 0;
        Ok(Some(match u16::from_be_bytes([frame[2], frame[3]]) {
            1 => {
                need(payload, 10, "SYN_STREAM")?;
                Frame::SynStream {
                    stream: stream("SYN_STREAM")?,
                    associated: u32_at(payload, 4) & 0x7fff_ffff,
                    priority: payload[8] >> 5,
                    fin,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers: self.read_headers(&payload[10..])?,
                }
            }
            2 => Frame::SynReply {
                stream: stream("SYN_REPLY")?,
                fin,
                headers: self.read_headers(&payload[4..])?,
            },
            3 => {
                need(payload, 8, "RST_STREAM")?;
                Frame::RstStream {
                    stream: stream("RST_STREAM")?,
                    status: u32_at(payload, 4),
                }
            }
            4 => {
                need(payload, 4, "SETTINGS")?;
                let n = u32_at(payload, 0) as usize;
                need(payload, 4 + n.saturating_mul(8), "SETTINGS")?;
                Frame::Settings(
                    (0..n)
                        .map(|i| {
                            let at = 4 + 8 * i;
                            let id = u32_at(payload, at) & 0x00ff_ffff;
                            (payload[at], id, u32_at(payload, at + 4))
                        })
                        .collect(),
                )
            }
            6 => {
                need(payload, 4, "PING")?;
                Frame::Ping(u32_at(payload, 0))
            }
            7 => {
                need(payload, 8, "GOAWAY")?;
                Frame::GoAway {
                    last_good: u32_at(payload, 0) & 0x7fff_ffff,
                    status: u32_at(payload, 4),
                }
            }
            8 => Frame::Headers {
                stream: stream("HEADERS")?,
                fin,
                headers: self.read_headers(&payload[4..])?,
            },
            9 => {
                need(payload, 8, "WINDOW_UPDATE")?;
                Frame::WindowUpdate {
                    stream: stream("WINDOW_UPDATE")?,
                    delta: u32_at(payload, 4) & 0x7fff_ffff,
                }
            }
            other => Frame::Unknown(other),
        }))
    }

    /// The bytes of `frame` (header blocks go through this session's compressor, so frames must be encoded in the
    /// order they are sent).
    pub fn encode(&mut self, frame: &Frame) -> Vec<u8> {
        let control = |kind: u16, flags: u8, payload: Vec<u8>| {
            let mut out = Vec::with_capacity(8 + payload.len());
            out.extend((0x8000 | VERSION).to_be_bytes());
            out.extend(kind.to_be_bytes());
            out.extend(((flags as u32) << 24 | payload.len() as u32).to_be_bytes());
            out.extend(payload);
            out
        };
        let fin_flag = |fin: bool| if fin { FLAG_FIN } else { 0 };
        let with_headers = |codec: &mut Codec, head: Vec<u8>, headers: &[(String, String)]| {
            let mut payload = head;
            payload.extend(codec.write_headers(headers));
            payload
        };
        match frame {
            Frame::SynStream {
                stream,
                associated,
                priority,
                fin,
                unidirectional,
                headers,
            } => {
                let mut head = stream.to_be_bytes().to_vec();
                head.extend(associated.to_be_bytes());
                head.extend([priority << 5, 0]);
                let flags = fin_flag(*fin)
                    | if *unidirectional {
                        FLAG_UNIDIRECTIONAL
                    } else {
                        0
                    };
                control(1, flags, with_headers(self, head, headers))
            }
            Frame::SynReply {
                stream,
                fin,
                headers,
            } => {
                let payload = with_headers(self, stream.to_be_bytes().to_vec(), headers);
                control(2, fin_flag(*fin), payload)
            }
            Frame::RstStream { stream, status } => {
                control(3, 0, [stream.to_be_bytes(), status.to_be_bytes()].concat())
            }
            Frame::Settings(entries) => {
                let mut payload = (entries.len() as u32).to_be_bytes().to_vec();
                for (flags, id, value) in entries {
                    payload.extend(((*flags as u32) << 24 | (id & 0x00ff_ffff)).to_be_bytes());
                    payload.extend(value.to_be_bytes());
                }
                control(4, 0, payload)
            }
            Frame::Ping(id) => control(6, 0, id.to_be_bytes().to_vec()),
            Frame::GoAway { last_good, status } => control(
                7,
                0,
                [last_good.to_be_bytes(), status.to_be_bytes()].concat(),
            ),
            Frame::Headers {
                stream,
                fin,
                headers,
            } => {
                let payload = with_headers(self, stream.to_be_bytes().to_vec(), headers);
                control(8, fin_flag(*fin), payload)
            }
            Frame::WindowUpdate { stream, delta } => {
                control(9, 0, [stream.to_be_bytes(), delta.to_be_bytes()].concat())
            }
            Frame::Data { stream, fin, data } => {
                let mut out = Vec::with_capacity(8 + data.len());
                out.extend((stream & 0x7fff_ffff).to_be_bytes());
                out.extend(((fin_flag(*fin) as u32) << 24 | data.len() as u32).to_be_bytes());
                out.extend(data);
                out
            }
            Frame::Unknown(kind) => control(*kind, 0, Vec::new()),
        }
    }

    fn read_headers(&mut self, compressed: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
        let block = self.inflate(compressed)?;
        let bad = |what: &str| SpdyError::Headers(what.to_string());
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8], SpdyError> {
            let s = block.get(at..at + n).ok_or_else(|| bad("truncated"))?;
            at += n;
            Ok(s)
        };
        let count = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes"));
        let mut out = Vec::new();
        for _ in 0..count {
            let mut text = || -> Result<String, SpdyError> {
                let n = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
                String::from_utf8(take(n)?.to_vec()).map_err(|_| bad("not UTF-8"))
            };
            let name = text()?;
            let value = text()?;
            out.push((name.to_ascii_lowercase(), value));
        }
        Ok(out)
    }

    fn write_headers(&mut self, headers: &[(String, String)]) -> Vec<u8> {
        let mut block = (headers.len() as u32).to_be_bytes().to_vec();
        for (name, value) in headers {
            for s in [name.to_ascii_lowercase().as_str(), value.as_str()] {
                block.extend((s.len() as u32).to_be_bytes());
                block.extend(s.as_bytes());
            }
        }
        self.deflate(&block)
    }

    /// Inflates one header block: the session's stream continues, flushed at the block's end by the sender.
    fn inflate(&mut self, input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let start = self.inflate.total_in();
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        loop {
            let used = (self.inflate.total_in() - start) as usize;
            let before = (self.inflate.total_in(), self.inflate.total_out());
            match self
                .inflate
                .decompress_vec(&input[used..], &mut out, FlushDecompress::Sync)
            {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(dictionary())
                        .map_err(|e| SpdyError::Headers(format!("dictionary: {e}")))?;
                    continue;
                }
                Err(e) => return Err(SpdyError::Headers(e.to_string())),
            }
            let used = (self.inflate.total_in() - start) as usize;
            if used >= input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            if out.len() > MAX_FRAME * 4 {
                return Err(SpdyError::Headers("inflates past the limit".into()));
            }
            if (self.inflate.total_in(), self.inflate.total_out()) == before
                && out.len() < out.capacity()
            {
                return Err(SpdyError::Headers("truncated compressed block".into()));
            }
            out.reserve(out.capacity().max(256));
        }
    }

    fn deflate(&mut self, input: &[u8]) -> Vec<u8> {
        let start = self.deflate.total_in();
        let mut out = Vec::with_capacity(input.len() + 64);
        loop {
            let used = (self.deflate.total_in() - start) as usize;
            // Compressing into memory only fails on a misuse of the stream, which this code does not do.
            let _ = self
                .deflate
                .compress_vec(&input[used..], &mut out, FlushCompress::Sync);
            let used = (self.deflate.total_in() - start) as usize;
            if used >= input.len() && out.len() < out.capacity() {
                return out;
            }
            out.reserve(out.capacity().max(64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_dictionary_has_spdy3s_length_and_checksum() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        // zlib names a preset dictionary by its Adler-32 in the stream header: SPDY/3 peers announce this one.
        let mut c = Compress::new(Compression::best(), true);
        assert_eq!(c.set_dictionary(d).unwrap(), 0xe3c6_a7c2);
    }

    #[test]
    fn frames_survive_a_round_trip_through_two_sessions() {
        let (mut client, mut server) = (Codec::new(), Codec::new());
        let frames = vec![
            Frame::SynStream {
                stream: 1,
                associated: 0,
                priority: 0,
                fin: true,
                unidirectional: false,
                headers: h(&[
                    ("streamtype", "error"),
                    ("port", "8080"),
                    ("requestid", "0"),
                ]),
            },
            Frame::SynStream {
                stream: 3,
                associated: 0,
                priority: 2,
                fin: false,
                unidirectional: false,
                headers: h(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::Data {
                stream: 3,
                fin: false,
                data: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            },
            Frame::Ping(1),
            Frame::Settings(vec![(0, 7, 65536)]),
            Frame::WindowUpdate {
                stream: 3,
                delta: 4096,
            },
            Frame::RstStream {
                stream: 3,
                status: CANCEL,
            },
            Frame::GoAway {
                last_good: 3,
                status: 0,
            },
        ];
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend(client.encode(f));
        }
        // Arriving in pieces: whole frames come out as they complete.
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for chunk in wire.chunks(5) {
            buf.extend(chunk);
            while let Some(f) = server.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
        // And the other way, a reply with headers (the second direction's compression stream).
        let reply = Frame::SynReply {
            stream: 1,
            fin: false,
            headers: Vec::new(),
        };
        let mut back = server.encode(&reply);
        assert_eq!(client.decode(&mut back).unwrap(), Some(reply));
    }

    #[test]
    fn bad_frames_are_refused_with_what_is_wrong() {
        let mut c = Codec::new();
        let mut v2 = vec![0x80, 0x02, 0x00, 0x01, 0, 0, 0, 0];
        assert_eq!(c.decode(&mut v2), Err(SpdyError::Version(2)));
        let mut short = vec![0x80, 0x03, 0x00, 0x06, 0, 0, 0, 2, 0, 0];
        assert_eq!(c.decode(&mut short), Err(SpdyError::Short("PING")));
        let mut huge = vec![0, 0, 0, 1, 0, 0xff, 0xff, 0xff];
        assert!(matches!(c.decode(&mut huge), Err(SpdyError::TooLarge(_))));
        let mut garbage = vec![0x80, 0x03, 0x00, 0x02, 0, 0, 0, 8, 0, 0, 0, 1, 1, 2, 3, 4];
        assert!(matches!(c.decode(&mut garbage), Err(SpdyError::Headers(_))));
    }
}
