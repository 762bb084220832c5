//! The Debian package: built from the workspace with cargo-deb, installed with dpkg, its unit
//! checked by systemd (PID 1 here is not systemd: `systemd-analyze verify` reads the unit as
//! systemd would load it), its binary and default config run, and removed without a trace.

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Output};

const UNIT: &str = "/usr/lib/systemd/system/memvisor.service";
const ENABLED: &str = "/etc/systemd/system/multi-user.target.wants/memvisor.service";
const INSTALLED: [&str; 4] = [
    "/usr/bin/memvisor",
    "/usr/bin/memvisor-agent",
    "/etc/memvisor/memvisor.toml",
    UNIT,
];

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} cannot run: {e}"))
}

fn succeeds(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn installed() -> bool {
    let out = run("dpkg-query", &["-W", "-f=${Status}", "memvisor"]);
    String::from_utf8_lossy(&out.stdout).contains("install ok installed")
}

/// Purges the package however the test ends: the machine had none before.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = run("dpkg", &["--purge", "memvisor"]);
    }
}

#[test]
fn the_package_installs_a_protected_restarting_service_and_purges_without_a_trace() {
    require_tool("systemd-analyze", "systemd");
    let cargo_deb = run("cargo", &["deb", "--version"]);
    assert!(
        cargo_deb.status.success(),
        "cargo-deb is missing: run 'cargo install --locked cargo-deb' (./scripts/test.sh does)"
    );
    assert!(
        !installed(),
        "a memvisor package is installed on this machine already; this test installs and purges its own, so remove it first ('dpkg --purge memvisor')"
    );
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = tempfile::tempdir().unwrap();
    let deb = out.path().join("memvisor.deb");
    // The binaries the test command built (this profile), packaged as they are.
    let built = Command::new("cargo")
        .current_dir(&workspace)
        .args([
            "deb",
            "-p",
            "memvisor",
            "--no-build",
            "--fast",
            "--no-strip",
        ])
        .args([
            "--target",
            "x86_64-unknown-linux-gnu",
            "--profile",
            "dev",
            "-o",
        ])
        .arg(&deb)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "cargo deb failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let contents = succeeds("dpkg-deb", &["--contents", deb.to_str().unwrap()]);
    for file in INSTALLED {
        assert!(
            contents.contains(&format!(".{file}")),
            "{file} is not in the package:\n{contents}"
        );
    }
    let conffiles = succeeds("dpkg-deb", &["--info", deb.to_str().unwrap(), "conffiles"]);
    assert_eq!(
        conffiles.trim(),
        "/etc/memvisor/memvisor.toml",
        "an edited config survives upgrades"
    );

    let _purge = Purge;
    succeeds("dpkg", &["-i", deb.to_str().unwrap()]);
    assert!(installed());
    let version = succeeds("/usr/bin/memvisor", &["--version"]);
    assert!(version.starts_with("memvisor "), "{version}");
    // The default config is the installed one, and it is valid on this machine.
    let checked = succeeds("/usr/bin/memvisor", &["check", "--json"]);
    let checked: serde_json::Value = serde_json::from_str(&checked).unwrap();
    assert_eq!(
        checked["file"], "/etc/memvisor/memvisor.toml",
        "{checked:#}"
    );
    assert_eq!(checked["budget"], "auto", "{checked:#}");

    // systemd accepts the unit as installed, with nothing to warn about.
    let verify = run("systemd-analyze", &["verify", UNIT]);
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success(),
        "systemd-analyze verify failed: {said}"
    );
    assert!(
        !said.contains("memvisor.service"),
        "systemd warns about the unit: {said}"
    );
    let unit = std::fs::read_to_string(UNIT).unwrap();
    for line in [
        "Restart=on-failure",
        "OOMScoreAdjust=-900",
        "KillMode=process",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "the unit lacks {line}:\n{unit}"
        );
    }
    assert!(
        Path::new(ENABLED).is_symlink(),
        "the package enables the service (it starts at the next boot)"
    );

    succeeds("dpkg", &["--purge", "memvisor"]);
    assert!(!installed());
    for file in INSTALLED.iter().chain([&ENABLED, &"/etc/memvisor"]) {
        assert!(
            !Path::new(file).exists() && !Path::new(file).is_symlink(),
            "{file} is left after purge"
        );
    }
}
