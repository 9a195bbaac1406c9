//! Users and groups: who a job runs as, and who may control cronwarden.
//!
//! Names go through the system's user and group databases (NSS). The config
//! resolves them when it is validated, so a typo or a missing account is an
//! error naming the key before anything runs; the worker resolves them
//! again when each run starts, so a changed group membership takes effect
//! without a reload and a deleted account fails that run with the reason.

use std::path::PathBuf;

use nix::unistd::{Gid, Group, Uid, User};

/// Everything a job's process is switched to before exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, as `initgroups` would set them.
    pub groups: Vec<u32>,
    pub home: PathBuf,
}

/// Who this process is (its effective uid), for the environment of jobs
/// that do not switch users.
pub fn current() -> Result<Credentials, String> {
    let uid = Uid::effective();
    let user = User::from_uid(uid)
        .map_err(|e| format!("cannot look up uid {uid}: {e}"))?
        .ok_or_else(|| format!("uid {uid} has no entry in the user database"))?;
    Ok(Credentials {
        user: user.name,
        uid: uid.as_raw(),
        gid: Gid::effective().as_raw(),
        groups: vec![],
        home: user.dir,
    })
}

/// The group's id, or why there is none.
pub(crate) fn group_id(name: &str) -> Result<u32, String> {
    match Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!("no group named {name:?} in the group database")),
        Err(e) => Err(format!("cannot look up group {name:?}: {e}")),
    }
}

/// What a job configured with `user` and/or `group` runs as: the user's
/// uid, primary group (or `group`), and supplementary groups; with only
/// `group`, this process's user with that group.
pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Credentials, String> {
    let gid = group.map(group_id).transpose()?;
    let Some(name) = user else {
        let mut me = current()?;
        if let Some(gid) = gid {
            me.gid = gid;
            me.groups = vec![gid];
        }
        return Ok(me);
    };
    let u = match User::from_name(name) {
        Ok(Some(u)) => u,
        Ok(None) => return Err(format!("no user named {name:?} in the user database")),
        Err(e) => return Err(format!("cannot look up user {name:?}: {e}")),
    };
    let primary = gid.map(Gid::from_raw).unwrap_or(u.gid);
    let cname = std::ffi::CString::new(name).map_err(|_| format!("invalid user name {name:?}"))?;
    let mut groups: Vec<u32> = nix::unistd::getgrouplist(&cname, primary)
        .map_err(|e| format!("cannot list the groups of {name:?}: {e}"))?
        .into_iter()
        .map(Gid::as_raw)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    Ok(Credentials {
        user: u.name,
        uid: u.uid.as_raw(),
        gid: primary.as_raw(),
        groups,
        home: u.dir,
    })
}

/// Whether this process may switch a job to `c` (only root can become
/// another user or group).
pub(crate) fn can_switch_to(c: &Credentials) -> bool {
    Uid::effective().is_root()
        || (c.uid == Uid::effective().as_raw() && c.gid == Gid::effective().as_raw())
}

/// The supplementary groups of a live process, from `/proc/<pid>/status`
/// (SO_PEERCRED carries only the primary group). Empty when unreadable.
pub fn process_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_with_its_groups_and_unknown_names_are_errors() {
        let root = resolve(Some("root"), None).unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.groups.contains(&0));
        assert_eq!(root.home, PathBuf::from("/root"));
        let e = resolve(Some("no-such-user-cw"), None).unwrap_err();
        assert!(e.contains("no user named"), "{e}");
        let e = resolve(None, Some("no-such-group-cw")).unwrap_err();
        assert!(e.contains("no group named"), "{e}");
        assert_eq!(group_id("root"), Ok(0));
        let mut mine: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(Gid::as_raw)
            .collect();
        mine.sort_unstable();
        let mut seen = process_groups(std::process::id() as i32);
        seen.sort_unstable();
        assert_eq!(seen, mine);
    }
}
