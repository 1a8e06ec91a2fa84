//! Netlink (Linux, through rtnetlink): a connection, link lookups and errno of failures - shared by the bridge pod
//! network - and addresses on the loopback device, which the service proxy adds for ClusterIPs and load balancer
//! addresses that are not local yet (root only).

use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::Handle;

/// A netlink request that failed, and what it was for.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {message}")]
pub struct Error {
    pub what: String,
    pub message: String,
}

fn failed(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error {
    let what = what.into();
    move |e| Error {
        what,
        message: e.to_string(),
    }
}

/// Opens a netlink connection (its driver runs on the current tokio runtime).
pub fn connect() -> std::io::Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(conn);
    Ok(handle)
}

/// The errno of a failed netlink request, if the kernel gave one.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().raw_os_error(),
        _ => None,
    }
}

/// The index of the link named `name`, or None when there is no such link.
pub async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, rtnetlink::Error> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(l)) => Ok(Some(l.header.index)),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Adds `ip/32` (or `/128`) to the loopback device; an address already there is fine.
pub async fn add_local(ip: IpAddr) -> Result<(), Error> {
    let handle = connect().map_err(|e| Error {
        what: "opening a netlink socket".into(),
        message: e.to_string(),
    })?;
    let lo = link_index(&handle, "lo")
        .await
        .map_err(failed("finding lo"))?
        .ok_or_else(|| Error {
            what: "finding lo".into(),
            message: "no loopback device".into(),
        })?;
    let len = if ip.is_ipv4() { 32 } else { 128 };
    match handle.address().add(lo, ip, len).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(failed(format!("adding {ip} to lo"))(e)),
    }
}

/// Removes an address [`add_local`] added.
pub async fn remove_local(ip: IpAddr) -> Result<(), Error> {
    let handle = connect().map_err(|e| Error {
        what: "opening a netlink socket".into(),
        message: e.to_string(),
    })?;
    let mut found = handle.address().get().set_address_filter(ip).execute();
    while let Some(msg) = found
        .try_next()
        .await
        .map_err(failed("listing addresses"))?
    {
        handle
            .address()
            .del(msg)
            .execute()
            .await
            .map_err(failed("removing an address"))?;
    }
    Ok(())
}
