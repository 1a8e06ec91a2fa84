//! The `pods/exec` contract (PodExecOptions and Kubernetes' remote-command channel protocol): the query options of an
//! exec request and the channel bytes of its WebSocket messages - 0 stdin, 1 stdout, 2 stderr, 3 the final status,
//! 4 terminal resize, and (v5) 255 to close a stream. The API server, the node agent and the CLI speak it; this is
//! data only.

/// The subprotocols spoken, preferred first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

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
