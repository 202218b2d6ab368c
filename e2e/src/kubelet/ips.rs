//! Pod IPs on loopback: 127.0.0.2, 127.0.0.3, … Each IP is held by an exclusive lock on a file
//! for as long as its pod exists, so kubelets in parallel test processes never share one.

use std::fs::{File, OpenOptions, TryLockError};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// A pod IP, held until dropped.
#[derive(Debug)]
pub struct IpLease {
    ip: Ipv4Addr,
    _lock: File,
}

impl IpLease {
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
}

/// The machine-wide directory of IP lock files.
pub fn default_lock_dir() -> PathBuf {
    std::env::temp_dir().join("tributary-process-kubelet-ips")
}

/// The lowest free IP from 127.0.0.2 up.
pub fn lease(lock_dir: &Path) -> Result<IpLease> {
    std::fs::create_dir_all(lock_dir)
        .with_context(|| format!("creating {}", lock_dir.display()))?;
    for n in 2u32..(1 << 16) {
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 0)) + n);
        if ip.octets()[3] == 0 || ip.octets()[3] == 255 {
            continue;
        }
        let path = lock_dir.join(format!("{ip}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => return Ok(IpLease { ip, _lock: file }),
            Err(TryLockError::WouldBlock) => continue,
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
    }
    bail!("no free loopback IP left in 127.0.0.0/16")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_distinct_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let a = lease(dir.path()).unwrap();
        let b = lease(dir.path()).unwrap();
        assert_eq!(a.ip(), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(b.ip(), Ipv4Addr::new(127, 0, 0, 3));
        drop(a);
        let c = lease(dir.path()).unwrap();
        assert_eq!(c.ip(), Ipv4Addr::new(127, 0, 0, 2));
        assert_ne!(c.ip(), b.ip());
    }
}
