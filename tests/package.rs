//! The Debian package: built by `scripts/package-deb` from the binary under
//! test (cargo-deb, no release build), installed with the real `dpkg -i`,
//! checked as an operator would find it, then purged. It changes the
//! machine it runs on (/usr/bin, /etc, a system user), so it runs only where
//! asked to (`CRONWARDEN_TEST_DPKG=1`, as `.ci/run` does on its fresh
//! machine) and is reported skipped elsewhere.

use std::{path::Path, process::Command};

use crate::util::skip;

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn have(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_deb_installs_a_working_cronwarden_and_purges_cleanly() {
    const NAME: &str = "the_deb_installs_a_working_cronwarden_and_purges_cleanly";
    if std::env::var_os("CRONWARDEN_TEST_DPKG").is_none() {
        return skip(&format!(
            "{NAME}: installs into this machine; set CRONWARDEN_TEST_DPKG=1 (CI does)"
        ));
    }
    if !nix::unistd::Uid::effective().is_root() || !have("dpkg", "--version") {
        return skip(&format!("{NAME}: needs root and dpkg"));
    }
    if !have("cargo-deb", "--version") {
        return skip(&format!(
            "{NAME}: needs cargo-deb (cargo install cargo-deb)"
        ));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (ok, out) = run(Command::new(root.join("scripts/package-deb"))
        .args(["--profile", "dev", "--no-build"])
        .current_dir(root));
    assert!(ok, "scripts/package-deb: {out}");
    let deb = std::fs::read_dir(root.join("target/debian"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb in target/debian");

    let (ok, contents) = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    assert!(ok, "{contents}");
    for want in [
        "./usr/bin/cronwarden",
        "cronwarden.service",
        "./usr/share/man/man1/cronwarden.1",
        "./etc/cronwarden.toml",
        "./usr/share/doc/cronwarden/examples/demo.toml",
    ] {
        assert!(
            contents.contains(want),
            "{want} not in the package:\n{contents}"
        );
    }

    let (ok, out) = run(Command::new("dpkg").arg("-i").arg(&deb));
    assert!(ok, "dpkg -i: {out}");
    // What an operator finds after installing.
    let installed = || -> Result<(), String> {
        let (ok, v) = run(Command::new("/usr/bin/cronwarden").arg("--version"));
        (ok && v.contains(env!("CARGO_PKG_VERSION")))
            .then_some(())
            .ok_or(format!("cronwarden --version: {v}"))?;
        // /etc/cronwarden.toml is found without --config and is valid as
        // shipped (it names the group the package created).
        let (ok, c) = run(Command::new("/usr/bin/cronwarden").arg("check"));
        ok.then_some(()).ok_or(format!("cronwarden check: {c}"))?;
        let (ok, g) = run(Command::new("getent").args(["group", "cronwarden"]));
        ok.then_some(())
            .ok_or(format!("no cronwarden group: {g}"))?;
        let (ok, u) = run(Command::new("getent").args(["passwd", "cronwarden"]));
        ok.then_some(()).ok_or(format!("no cronwarden user: {u}"))?;
        let (_, files) = run(Command::new("dpkg").args(["-L", "cronwarden"]));
        let unit = files
            .lines()
            .find(|l| l.ends_with("/cronwarden.service"))
            .ok_or(format!("no unit installed: {files}"))?;
        let text = std::fs::read_to_string(unit).map_err(|e| format!("{unit}: {e}"))?;
        text.contains("ExecStart=/usr/bin/cronwarden run")
            .then_some(())
            .ok_or(format!("the unit runs another binary: {text}"))?;
        if have("systemd-analyze", "--version") {
            let (ok, v) = run(Command::new("systemd-analyze").args(["verify", unit]));
            ok.then_some(())
                .ok_or(format!("systemd-analyze verify {unit}: {v}"))?;
        }
        Ok(())
    };
    let result = installed();
    let (ok, out) = run(Command::new("dpkg").args(["--purge", "cronwarden"]));
    assert!(ok, "dpkg --purge: {out}");
    result.unwrap();
    assert!(
        !Path::new("/usr/bin/cronwarden").exists(),
        "purge leaves no binary"
    );
    assert!(
        !Path::new("/etc/cronwarden.toml").exists(),
        "purge removes the conffile"
    );
}
