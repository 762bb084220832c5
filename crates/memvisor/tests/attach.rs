//! A QEMU started by hand (as Proxmox or a script would) is managed like memvisor's own VMs.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

fn image_file(name: &str) -> String {
    let key = std::fs::read_to_string(cache_dir().join("current")).unwrap();
    cache_dir()
        .join("images")
        .join(key.trim())
        .join(name)
        .display()
        .to_string()
}

#[test]
fn a_hand_started_qemu_is_listed_and_ballooned() {
    require_vm_prerequisites();
    let mut host = Host::new();
    host.up("1G", "");
    let qmp = host.path().join("hand-qmp.sock");
    let pid_file = host.path().join("hand.pid");
    let status = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "384M",
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args([
            "-kernel",
            &image_file("vmlinuz"),
            "-initrd",
            &image_file("initrd.cpio"),
        ])
        .args(["-append", "console=ttyS0 quiet", "-serial", "null"])
        .args(["-device", "virtio-balloon-pci,id=hand-balloon"])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp.display()))
        .arg("-daemonize")
        .arg("-pidfile")
        .arg(&pid_file)
        .status()
        .unwrap();
    assert!(status.success());
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();
    let _kill = KillOnDrop(pid.clone());

    host.change("hand", &["attach", "hand", "--qmp", qmp.to_str().unwrap()]);
    let vms = host.ps();
    assert_eq!(vms.len(), 1);
    assert_eq!(vms[0]["origin"], "attached");
    assert_eq!(vms[0]["pid"].to_string(), pid);
    assert_eq!(vms[0]["memory_mib"], 384);

    // Once the guest has booted and reports, the balloon works as for a launched VM.
    host.wait_for("hand", Duration::from_secs(60), "guest statistics", |v| {
        v["guest_free_mib"].is_u64()
    });
    host.balloon("hand", 192);
    host.wait_balloon("hand", 192, Duration::from_secs(30));
    host.balloon("hand", 384);
    host.wait_balloon("hand", 384, Duration::from_secs(30));

    // Attaching the same name twice, or a socket that is not QEMU's, changes nothing.
    let err = fails(
        host.path(),
        &["attach", "hand", "--qmp", qmp.to_str().unwrap()],
    );
    assert!(err.contains("already managed"), "{err}");
    let fake = host.path().join("fake.sock");
    let listener = std::os::unix::net::UnixListener::bind(&fake).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            use std::io::Write;
            let mut stream = stream;
            let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.2\r\n");
            std::thread::sleep(Duration::from_secs(2));
        }
    });
    let err = fails(
        host.path(),
        &["attach", "imposter", "--qmp", fake.to_str().unwrap()],
    );
    assert!(
        err.contains("is not a QEMU QMP socket") && err.contains("SSH-2.0"),
        "{err}"
    );
    assert_eq!(host.ps().len(), 1, "a failed attach adds no VM");

    // down stops what memvisor launched, never what it only attached to.
    ok(host.path(), &["down"]);
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the attached QEMU must survive 'down'"
    );
}

struct KillOnDrop(String);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-9").arg(&self.0).status();
    }
}
