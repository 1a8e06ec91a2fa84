//! A real etcd for tests: `etcd` from PATH (Debian's etcd-server) in a temp dir on loopback ports of its own.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running etcd, stopped when dropped.
pub struct Etcd {
    child: Child,
    pub endpoint: String,
    peer: u16,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    /// Starts etcd, or None (printing why) when it is not installed and not required.
    pub fn start() -> Option<Etcd> {
        let found = Command::new("etcd")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            assert!(
                !crate::common::required(),
                "etcd is required (CAPSTAN_REQUIRE_EXTERNAL=1) but not on PATH"
            );
            eprintln!("SKIP: etcd not found on PATH");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("127.0.0.1:{client}");
        let child = spawn(&dir, &endpoint, peer);
        let etcd = Etcd {
            child,
            endpoint,
            peer,
            dir,
        };
        etcd.wait_ready();
        Some(etcd)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&self.endpoint).is_err() {
            assert!(Instant::now() < deadline, "etcd did not start within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills etcd (SIGKILL) and starts it again on the same data and ports.
    #[allow(dead_code)]
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.dir, &self.endpoint, self.peer);
        self.wait_ready();
    }

    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoint)
    }
}

fn spawn(dir: &tempfile::TempDir, endpoint: &str, peer: u16) -> Child {
    Command::new("etcd")
        .arg("--name")
        .arg("test")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--listen-client-urls")
        .arg(format!("http://{endpoint}"))
        .arg("--advertise-client-urls")
        .arg(format!("http://{endpoint}"))
        .arg("--listen-peer-urls")
        .arg(format!("http://127.0.0.1:{peer}"))
        .arg("--initial-advertise-peer-urls")
        .arg(format!("http://127.0.0.1:{peer}"))
        .arg("--initial-cluster")
        .arg(format!("test=http://127.0.0.1:{peer}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd")
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
