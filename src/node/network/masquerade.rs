//! Masquerade of pod traffic leaving the cluster (the `bridge` pod network): a packet from this node's pod CIDR to
//! an address outside the cluster CIDR and the Service CIDR leaves with the node's address, so the outside can
//! answer it. One nftables table per node (`capstan_<bridge>`), written whole in one `nft -f -` transaction, so
//! several nodes on one machine and agent restarts never leave two versions; removed when the node stops with its
//! pods. Needs the `nft` tool (Debian's `nftables`); without it pods reach only the cluster, which is logged.

use super::NetworkError;

/// The nftables table of the node whose bridge is `bridge` (`cs-244-0` -> `capstan_244_0`).
pub fn table_name(bridge: &str) -> String {
    format!(
        "capstan_{}",
        bridge.trim_start_matches("cs-").replace('-', "_")
    )
}

/// The ruleset: the table (re)made empty, then one postrouting NAT rule.
pub fn ruleset(table: &str, pod_cidr: &str, exempt: &[String]) -> String {
    let exempt: Vec<&str> = exempt
        .iter()
        .map(String::as_str)
        .filter(|c| !c.is_empty())
        .chain(std::iter::once(pod_cidr))
        .collect();
    format!(
        "table ip {table} {{}}\n\
         delete table ip {table}\n\
         table ip {table} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {pod_cidr} ip daddr != {{ {} }} masquerade\n\
         \t}}\n\
         }}\n",
        exempt.join(", ")
    )
}

async fn nft(script: &str) -> Result<(), NetworkError> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            NetworkError::Unsupported(format!(
                "running nft ({e}): install nftables so pods can reach addresses outside the cluster"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| NetworkError::system("writing to nft", e))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| NetworkError::system("running nft", e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetworkError::system(
            "nft",
            String::from_utf8_lossy(&out.stderr).trim(),
        ))
    }
}

/// Masquerades traffic from `pod_cidr` to anything outside `exempt` (the cluster and Service CIDRs).
pub async fn apply(table: &str, pod_cidr: &str, exempt: &[String]) -> Result<(), NetworkError> {
    nft(&ruleset(table, pod_cidr, exempt)).await
}

/// Removes the node's table.
pub async fn remove(table: &str) {
    if let Err(e) = nft(&format!("table ip {table} {{}}\ndelete table ip {table}\n")).await {
        tracing::debug!(table, "removing the masquerade table: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_masquerades_only_traffic_leaving_the_cluster() {
        assert_eq!(table_name("cs-244-0"), "capstan_244_0");
        let r = ruleset(
            "capstan_244_0",
            "10.244.0.0/24",
            &["10.244.0.0/16".into(), "10.96.0.0/12".into(), String::new()],
        );
        // Remade from nothing in one transaction.
        assert!(r.starts_with("table ip capstan_244_0 {}\ndelete table ip capstan_244_0\n"));
        assert!(r.contains("type nat hook postrouting priority srcnat"));
        assert!(r.contains(
            "ip saddr 10.244.0.0/24 ip daddr != { 10.244.0.0/16, 10.96.0.0/12, 10.244.0.0/24 } masquerade"
        ));
    }
}
