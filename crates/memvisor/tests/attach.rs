//! A QEMU started by hand (as Proxmox or a script would) is managed like memvisor's own VMs.

mod common;
use common::*;
use std::path::Path;
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
    let (pid, _kill) = start_qemu(&qmp, None);

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

    // A daemon killed and started again takes the balloon as it finds it: a target it did not
    // know would read as the boot size, and the policy's next step from there would deflate it.
    restart_daemon(&host);
    let vm = host.vm("hand");
    assert!(
        mib(&vm, "balloon_target_mib").abs_diff(192) <= 8,
        "the balloon's target was not taken over: {vm:#}"
    );
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

/// Starts a QEMU outside memvisor, as Proxmox or a script would; returns its pid and a guard
/// that kills it.
fn start_qemu(qmp: &Path, name: Option<&str>) -> (String, KillOnDrop) {
    let pid_file = qmp.with_extension("pid");
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
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
    .arg(&pid_file);
    if let Some(name) = name {
        qemu.args(["-name", name]);
    }
    assert!(qemu.status().unwrap().success());
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();
    (pid.clone(), KillOnDrop(pid))
}

/// One QMP command on `socket`, as another management tool would send it. QEMU serves one
/// client at a time: the greeting comes only once no one else holds the monitor.
fn qmp_command(socket: &Path, command: &str) -> serde_json::Value {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .expect("QEMU greets another client within 5 s: memvisor must not hold its monitor");
    for sent in [r#"{"execute":"qmp_capabilities"}"#, command] {
        writeln!(writer, "{sent}").unwrap();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            let reply: serde_json::Value = serde_json::from_str(&line).unwrap();
            if reply.get("return").is_some() || reply.get("error").is_some() {
                if sent == command {
                    return reply;
                }
                break;
            }
        }
    }
    unreachable!()
}

#[test]
fn a_balloon_another_tool_moves_is_left_to_it_instead_of_fought_over() {
    require_vm_prerequisites();
    let mut host = Host::new();
    host.up("1G", "");
    let qmp = host.path().join("hand-qmp.sock");
    let (_, _kill) = start_qemu(&qmp, None);
    host.change("hand", &["attach", "hand", "--qmp", qmp.to_str().unwrap()]);
    host.wait_for("hand", Duration::from_secs(60), "guest statistics", |v| {
        v["guest_free_mib"].is_u64()
    });
    host.balloon("hand", 256);
    host.wait_balloon("hand", 256, Duration::from_secs(30));

    // Its manager uses the monitor memvisor uses (as Proxmox's qm does): memvisor leaves it free
    // between its exchanges.
    let reply = qmp_command(
        &qmp,
        &format!(
            r#"{{"execute":"balloon","arguments":{{"value":{}}}}}"#,
            192u64 << 20
        ),
    );
    assert!(reply.get("return").is_some(), "{reply}");
    let event = wait_event(
        &host,
        &[
            "hand's balloon left the 256 MiB memvisor had set",
            "something else manages it too",
            "leaves it alone",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(event["kind"], "fault");
    // memvisor takes the new size as its target and does not pull the balloon back.
    let vm = host.vm("hand");
    let target = mib(&vm, "balloon_target_mib");
    assert!(target.abs_diff(192) <= 8, "{vm:#}");
    std::thread::sleep(Duration::from_secs(5));
    let vm = host.vm("hand");
    assert_eq!(mib(&vm, "balloon_target_mib"), target, "{vm:#}");
    assert!(mib(&vm, "balloon_actual_mib").abs_diff(192) <= 8, "{vm:#}");
}

#[test]
fn declared_and_discovered_qemus_are_attached_as_they_appear_and_let_go_when_they_end() {
    require_vm_prerequisites();
    let mut host = Host::new();
    let found = host.path().join("found");
    std::fs::create_dir(&found).unwrap();
    // Declared, and where the glob looks too: managed once, as declared.
    let declared = found.join("declared.qmp");
    // A socket the glob matches that is not QEMU's.
    let fake = found.join("fake.qmp");
    let _listener = std::os::unix::net::UnixListener::bind(&fake).unwrap();
    host.up_with(
        "2G",
        "",
        &format!(
            "[scheduler]\npolicy = \"manual\"\n[[attach]]\nname = \"db\"\nqmp = \"{}\"\nreservation = \"256M\"\nshares = 2000\n[discover]\nqmp = \"{}/*.qmp\"\n",
            declared.display(),
            found.display()
        ),
    );
    // web has a cgroup of its own, as a systemd scope gives one; b1 shares one with another
    // process; db stays where the test runs.
    let (web_pid, _named) = start_qemu(&found.join("a.qmp"), Some("web"));
    let own = Group::new(&format!("{}-own", host.cgroup), &[&web_pid]);
    let (unnamed_pid, unnamed) = start_qemu(&found.join("b1.qmp"), None);
    let mut neighbour = Command::new("sleep").arg("600").spawn().unwrap();
    let shared = Group::new(
        &format!("{}-shared", host.cgroup),
        &[&unnamed_pid, &neighbour.id().to_string()],
    );
    let (_, _db) = start_qemu(&declared, None);
    let names = |host: &Host| -> Vec<String> {
        host.ps()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while names(&host) != ["b1", "db", "web"] {
        assert!(
            std::time::Instant::now() < deadline,
            "not all attached: {:?}",
            names(&host)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let db = host.vm("db");
    assert_eq!(
        (mib(&db, "reservation_mib"), db["shares"].as_u64()),
        (256, Some(2000)),
        "as declared: {db:#}"
    );
    wait_event(
        &host,
        &["db attached", "glob matches its socket too", "managed once"],
        Duration::from_secs(5),
    );
    assert_eq!(host.vm("web")["origin"], "attached");
    wait_event(
        &host,
        &[
            "web attached",
            &format!("host swap through its cgroup {}", own.0),
        ],
        Duration::from_secs(5),
    );
    wait_event(
        &host,
        &[
            "b1 attached",
            "never host-swapped",
            "also holds other processes",
        ],
        Duration::from_secs(5),
    );
    let refused = wait_event(
        &host,
        &["fake.qmp not attached", "not a QEMU QMP socket"],
        Duration::from_secs(30),
    );
    assert_eq!(refused["kind"], "fault");

    // A QEMU that ends is let go; the others stay.
    drop(unnamed);
    wait_event(
        &host,
        &["b1 let go", "its QEMU ended"],
        Duration::from_secs(30),
    );
    assert_eq!(names(&host), ["db", "web"]);
    let _ = neighbour.kill();
    let _ = neighbour.wait();
    drop((shared, own));
}

struct KillOnDrop(String);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-9").arg(&self.0).status();
    }
}
