//! Machines for multi-machine tests (root): a bridge in the test's own network namespace holding `.1` of a /24 no
//! other test uses, and one network namespace per "machine", joined to the bridge by a veth pair, with its own
//! address. Processes run on a machine through `nsenter --net`. Everything is removed when the `Lan` is dropped.
#![allow(dead_code)]

use std::process::Command;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network of machines on one bridge.
pub struct Lan {
    /// `172.x.y` of the /24.
    pub prefix: String,
    pub bridge: String,
    tag: String,
    namespaces: Vec<String>,
}

/// One machine: a network namespace and its address.
#[derive(Clone, Debug)]
pub struct Machine {
    pub netns: String,
    pub address: String,
}

impl Machine {
    /// `program args...` run on this machine.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.netns))
            .arg("--")
            .arg(program);
        c
    }
}

impl Lan {
    /// A new bridge with a /24 of 172.16.0.0/12 that no other test of this run (or other run) holds.
    pub fn new() -> Lan {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // Try /24s until one is not in use on this machine (another test binary may hold some).
        let seed = std::process::id().wrapping_mul(7919).wrapping_add(n * 131);
        for step in 0..4096u32 {
            let k = (seed.wrapping_add(step * 17)) % 4096;
            let prefix = format!("172.{}.{}", 16 + k / 256, k % 256);
            let tag = format!("{k:03x}");
            let bridge = format!("cslan{tag}");
            if std::path::Path::new("/sys/class/net")
                .join(&bridge)
                .exists()
            {
                continue;
            }
            let taken = Command::new("ip")
                .args(["-4", "-o", "addr"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(" {prefix}.")))
                .unwrap_or(false);
            if taken {
                continue;
            }
            if !Command::new("ip")
                .args(["link", "add", &bridge, "type", "bridge"])
                .status()
                .is_ok_and(|s| s.success())
            {
                continue;
            }
            ip(&["addr", "add", &format!("{prefix}.1/24"), "dev", &bridge]);
            ip(&["link", "set", &bridge, "up"]);
            return Lan {
                prefix,
                bridge,
                tag,
                namespaces: Vec::new(),
            };
        }
        panic!("no free /24 for a test network");
    }

    /// The bridge's own address (where a server in the test's namespace listens).
    pub fn gateway(&self) -> String {
        format!("{}.1", self.prefix)
    }

    /// A machine with address `<prefix>.<host>` (2..=254).
    pub fn machine(&mut self, host: u8) -> Machine {
        let netns = format!("cslan{}-{host}", self.tag);
        let outside = format!("cl{}o{host}", self.tag);
        let address = format!("{}.{host}", self.prefix);
        ip(&["netns", "add", &netns]);
        self.namespaces.push(netns.clone());
        ip(&[
            "link", "add", &outside, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ]);
        ip(&["link", "set", &outside, "master", &self.bridge, "up"]);
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &netns, "link", "set", "eth0", "up"]);
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        // No default route: machines reach only this network.
        Machine { netns, address }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}
