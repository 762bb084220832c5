//! Debian packages through apt, for the guest image only: `apt-cache` says which version and
//! hash apt would fetch, `apt-get download` fetches it, `dpkg-deb -x` unpacks it. Nothing is
//! installed on the host.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum AptError {
    #[error(
        "cannot run {tool}: {source}; memvisor image build needs a Debian host with apt and dpkg"
    )]
    Tool {
        tool: &'static str,
        source: std::io::Error,
    },
    #[error("'{command}' failed: {stderr}{hint}")]
    Failed {
        command: String,
        stderr: String,
        hint: &'static str,
    },
    #[error("apt knows no candidate for package {0}; run 'apt-get update' first")]
    NoCandidate(String),
    #[error("downloaded {path} does not match the SHA256 apt lists ({expected}); delete it and run again")]
    Checksum { path: PathBuf, expected: String },
    #[error("file i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One package as apt would fetch it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

fn run(tool: &'static str, args: &[&str], dir: Option<&Path>) -> Result<String, AptError> {
    let mut command = Command::new(tool);
    command.args(args);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let out = command
        .output()
        .map_err(|source| AptError::Tool { tool, source })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let hint = if stderr.contains("Unable to locate") || stderr.contains("No packages found") {
            " (run 'apt-get update' first)"
        } else {
            ""
        };
        return Err(AptError::Failed {
            command: format!("{tool} {}", args.join(" ")),
            stderr,
            hint,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Reads the first stanza of `apt-cache show --no-all-versions`.
pub fn parse_show(name: &str, text: &str) -> Option<Package> {
    let stanza = text.split("\n\n").next()?;
    let field = |key: &str| {
        stanza.lines().find_map(|l| {
            l.strip_prefix(key)?
                .strip_prefix(':')
                .map(|v| v.trim().to_string())
        })
    };
    Some(Package {
        name: name.to_string(),
        version: field("Version")?,
        sha256: field("SHA256")?,
    })
}

/// The versioned kernel package a metapackage such as `linux-image-amd64` depends on.
pub fn parse_kernel_dependency(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|dep| dep.starts_with("linux-image-"))
        .map(str::to_string)
}

pub fn candidate(name: &str) -> Result<Package, AptError> {
    let text = run("apt-cache", &["show", "--no-all-versions", name], None)?;
    parse_show(name, &text).ok_or_else(|| AptError::NoCandidate(name.to_string()))
}

pub fn kernel_package(meta: &str) -> Result<String, AptError> {
    let text = run("apt-cache", &["depends", meta], None)?;
    parse_kernel_dependency(&text).ok_or_else(|| AptError::NoCandidate(meta.to_string()))
}

pub fn sha256_file(path: &Path) -> Result<String, AptError> {
    let bytes = std::fs::read(path).map_err(|source| AptError::Io {
        path: path.into(),
        source,
    })?;
    Ok(hex(&Sha256::digest(&bytes)))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The package's .deb in `dir`, downloaded only if no file with its hash is there yet.
pub fn fetch(package: &Package, dir: &Path) -> Result<PathBuf, AptError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AptError::Io { path, source }
    };
    let target = dir.join(format!("{}.deb", package.sha256));
    if target.exists() && sha256_file(&target)? == package.sha256 {
        return Ok(target);
    }
    let staging = dir.join(format!("download-{}", std::process::id()));
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    run(
        "apt-get",
        &["download", &format!("{}={}", package.name, package.version)],
        Some(&staging),
    )?;
    let deb = std::fs::read_dir(&staging)
        .map_err(io(&staging))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| AptError::NoCandidate(package.name.clone()))?;
    if sha256_file(&deb)? != package.sha256 {
        return Err(AptError::Checksum {
            path: deb,
            expected: package.sha256.clone(),
        });
    }
    std::fs::rename(&deb, &target).map_err(io(&target))?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(target)
}

/// Unpacks a .deb's files into `dir`.
pub fn extract(deb: &Path, dir: &Path) -> Result<(), AptError> {
    let (deb, dir) = (deb.display().to_string(), dir.display().to_string());
    run("dpkg-deb", &["-x", &deb, &dir], None).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_apt_cache_show() {
        let text = "Package: busybox-static\nSource: busybox (1:1.35.0-4)\nVersion: 1:1.35.0-4+deb12u1+b1\n\
                    Filename: pool/main/b/busybox/busybox-static_1.35.0-4+deb12u1+b1_amd64.deb\n\
                    SHA256: 3d3fdbe9\n\nPackage: busybox-static\nVersion: 0\n";
        assert_eq!(
            parse_show("busybox-static", text),
            Some(Package {
                name: "busybox-static".into(),
                version: "1:1.35.0-4+deb12u1+b1".into(),
                sha256: "3d3fdbe9".into()
            })
        );
        assert_eq!(parse_show("x", "Package: x\n"), None);
    }

    #[test]
    fn reads_the_kernel_a_metapackage_names() {
        let text =
            "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n  Recommends: firmware\n";
        assert_eq!(
            parse_kernel_dependency(text),
            Some("linux-image-6.1.0-56-amd64".into())
        );
        assert_eq!(parse_kernel_dependency("x\n  Depends: libc6\n"), None);
    }
}
