//! Which boot this is, for `@reboot` jobs: the kernel's boot id, a random
//! UUID made at each boot. In test builds a fail point reads it from a
//! file instead (`worker::boot_id=return(PATH)`), so a test can stage a
//! new boot without rebooting the machine.

const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// The current boot id, `None` when it cannot be read.
pub(crate) fn read() -> Option<String> {
    let path = match fail::eval("worker::boot_id", |path| path) {
        Some(Some(path)) => path,
        _ => BOOT_ID.to_string(),
    };
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Ok(_) => {
            tracing::warn!(path, "the boot id is empty: @reboot jobs will not fire");
            None
        }
        Err(e) => {
            tracing::warn!(
                path,
                "cannot read the boot id ({e}): @reboot jobs will not fire"
            );
            None
        }
    }
}
