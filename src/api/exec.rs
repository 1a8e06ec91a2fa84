//! The `pods/exec` contract (PodExecOptions and Kubernetes' remote-command channel protocol): the query options of an
//! exec request and the channel bytes of its WebSocket messages - 0 stdin, 1 stdout, 2 stderr, 3 the final status,
//! 4 terminal resize, and (v5) 255 to close a stream. The API server, the node agent and the CLI speak it; this is
//! data only.

/// The subprotocols spoken, preferred first: the binary ones (each message starts with its channel byte; a client
/// may send them as text frames too) and the base64 ones (text frames: the channel as an ASCII digit, then the data
/// in base64), as Kubernetes speaks them.
pub const PROTOCOLS: [&str; 7] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "base64.channel.k8s.io",
];

/// The subprotocols of `pods/portforward` over WebSocket, preferred first. For the i-th port asked for, channel 2i
/// carries its data and 2i+1 its errors; the first message on each is the port number (2 bytes, little-endian).
pub const PORTFORWARD_PROTOCOLS: [&str; 4] = [
    "v4.channel.k8s.io",
    "channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "base64.channel.k8s.io",
];

/// The `ports` of a port-forward query (`ports=8080&ports=9090`, or `ports=8080,9090`).
pub fn forwarded_ports(query: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if k != "ports" {
            continue;
        }
        for p in v.split(',').filter(|p| !p.is_empty()) {
            let port: u16 = p
                .trim()
                .parse()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("invalid port {p:?}: a port is 1-65535"))?;
            ports.push(port);
        }
    }
    if ports.is_empty() {
        return Err("at least one port is required (ports=PORT)".into());
    }
    Ok(ports)
}

/// How one subprotocol frames its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// Text frames with base64 data (`*base64.channel.k8s.io`).
    pub base64: bool,
    /// `v5.channel.k8s.io`: a client may close one stream (channel 255).
    pub v5: bool,
    /// v4 and v5: the status channel carries a `Status` (older ones: a plain error message).
    pub status: bool,
}

impl Framing {
    pub fn of(protocol: &str) -> Framing {
        Framing {
            base64: protocol.contains("base64"),
            v5: protocol == "v5.channel.k8s.io",
            status: protocol.starts_with("v4.") || protocol.starts_with("v5."),
        }
    }

    /// A message's bytes for `data` on `channel`, and whether it is a text frame.
    pub fn encode(&self, channel: u8, data: &[u8]) -> (Vec<u8>, bool) {
        if self.base64 {
            use base64::Engine;
            let mut out = vec![b'0' + channel];
            out.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(data)
                    .as_bytes(),
            );
            (out, true)
        } else {
            let mut out = Vec::with_capacity(data.len() + 1);
            out.push(channel);
            out.extend_from_slice(data);
            (out, false)
        }
    }

    /// The channel and data of a received message (`text`: it came as a text frame). None: empty or undecodable.
    pub fn decode(&self, message: &[u8], text: bool) -> Option<(u8, Vec<u8>)> {
        let (&first, rest) = message.split_first()?;
        if self.base64 && text {
            use base64::Engine;
            let channel = first.checked_sub(b'0')?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?;
            Some((channel, data))
        } else {
            Some((first, rest.to_vec()))
        }
    }
}

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
pub const CLOSE: u8 = 255;

/// The exec options of a query string (`command` repeats).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    pub command: Vec<String>,
    pub container: Option<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// Why exec options were refused (kubectl's wording).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error("you must specify at least one command for the container")]
    NoCommand,
    #[error("you must specify at least one of stdin, stdout, stderr")]
    NoStream,
}

impl Options {
    pub fn parse(query: &str) -> Result<Options, OptionsError> {
        let mut o = Options::default();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            let flag = v == "true" || v == "1";
            match k.as_ref() {
                "command" => o.command.push(v.into_owned()),
                "container" => o.container = Some(v.into_owned()),
                "stdin" => o.stdin = flag,
                "stdout" => o.stdout = flag,
                "stderr" => o.stderr = flag,
                "tty" => o.tty = flag,
                _ => {}
            }
        }
        if o.command.is_empty() {
            return Err(OptionsError::NoCommand);
        }
        if !(o.stdin || o.stdout || o.stderr) {
            return Err(OptionsError::NoStream);
        }
        Ok(o)
    }

    pub fn query(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for c in &self.command {
            q.append_pair("command", c);
        }
        for (k, v) in [
            ("stdin", self.stdin),
            ("stdout", self.stdout),
            ("stderr", self.stderr),
            ("tty", self.tty),
        ] {
            if v {
                q.append_pair(k, "true");
            }
        }
        q.finish()
    }
}

#[cfg(test)]
mod framing_tests {
    use super::*;

    #[test]
    fn binary_and_base64_framings_round_trip_and_text_frames_carry_raw_channels() {
        let bin = Framing::of("v4.channel.k8s.io");
        assert_eq!(bin.encode(STDOUT, b"hi"), (vec![1, b'h', b'i'], false));
        // The Python client sends text frames whose first character is the channel byte.
        assert_eq!(
            bin.decode(b"\0echo test string 1\n", true),
            Some((0, b"echo test string 1\n".to_vec()))
        );
        let b64 = Framing::of("base64.channel.k8s.io");
        let (msg, text) = b64.encode(STDERR, b"oops");
        assert!(text);
        assert_eq!(msg, b"2b29wcw==");
        assert_eq!(b64.decode(&msg, true), Some((STDERR, b"oops".to_vec())));
        assert!(Framing::of("v5.channel.k8s.io").v5);
        assert!(!Framing::of("channel.k8s.io").status);
    }
}
