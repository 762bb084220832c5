//! Builds the guest image and caches it by content: the key hashes every input (package hashes
//! as apt lists them, the agent binary, the init script, the module list), so a rebuild happens
//! only when one of them changes.

use crate::apt::{self, AptError};
use crate::initramfs::{self, Entry, Node, AGENT_PATH};
use crate::modules::{self, ModulesError, GUEST_MODULES};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

pub const DEFAULT_CACHE_DIR: &str = "/var/cache/memvisor";
const KERNEL_META_PACKAGE: &str = "linux-image-amd64";
const BUSYBOX_PACKAGE: &str = "busybox-static";
/// Bumped when the image layout changes in a way the inputs do not show.
const LAYOUT_VERSION: &str = "1";
/// The serial number of the swap disk (`memvisor_qemu::launch::SWAP_SERIAL`).
pub const SWAP_SERIAL: &str = "memvisor-swap";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Apt(#[from] AptError),
    #[error(transparent)]
    Modules(#[from] ModulesError),
    #[error("guest agent binary {0} not found: build it with 'cargo build --release' (it is the memvisor-agent binary) or pass --agent PATH")]
    NoAgent(PathBuf),
    #[error("kernel {0} not found: pass the path of a bzImage to --kernel")]
    NoKernel(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("depmod failed on the kernel's modules: {0}; install it with 'apt-get install kmod'")]
    Depmod(String),
    #[error("the kernel package has {0} module trees under lib/modules; expected exactly one")]
    KernelRelease(usize),
    #[error("no guest image in {0}: run 'memvisor image build' first")]
    NotBuilt(PathBuf),
    #[error(
        "the guest image manifest {path} is unreadable: {detail}; run 'memvisor image build' again"
    )]
    BadManifest { path: PathBuf, detail: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError {
    let path = path.to_path_buf();
    move |source| ImageError::Io { path, source }
}

pub struct BuildOptions {
    pub cache_dir: PathBuf,
    pub agent: PathBuf,
    /// Use this kernel instead of Debian's; its modules come from `modules`, if given.
    pub kernel: Option<PathBuf>,
    /// A `lib/modules/RELEASE` directory matching `kernel`.
    pub modules: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    pub key: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Where the kernel came from: a Debian package and version, or a path.
    pub kernel_source: String,
    pub modules: Vec<String>,
    pub initrd_bytes: u64,
}

pub struct BuildReport {
    pub image: Image,
    pub cached: bool,
    pub seconds: f64,
}

enum KernelSource {
    Debian(apt::Package),
    Own {
        kernel: PathBuf,
        modules: Option<PathBuf>,
    },
}

fn hash_file(path: &Path) -> Result<String, ImageError> {
    Ok(apt::sha256_file(path)?)
}

/// The image built last, which launches use.
pub fn current(cache_dir: &Path) -> Result<Image, ImageError> {
    let pointer = cache_dir.join("current");
    let key =
        std::fs::read_to_string(&pointer).map_err(|_| ImageError::NotBuilt(cache_dir.into()))?;
    read_manifest(
        &cache_dir
            .join("images")
            .join(key.trim())
            .join("manifest.json"),
    )
}

fn read_manifest(path: &Path) -> Result<Image, ImageError> {
    let bad = |detail: String| ImageError::BadManifest {
        path: path.into(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let image: Image = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if !image.kernel.exists() || !image.initrd.exists() {
        return Err(bad("its kernel or initrd is missing".into()));
    }
    Ok(image)
}

pub fn build(options: &BuildOptions) -> Result<BuildReport, ImageError> {
    let started = Instant::now();
    if !options.agent.is_file() {
        return Err(ImageError::NoAgent(options.agent.clone()));
    }
    let source = match &options.kernel {
        Some(kernel) if !kernel.is_file() => return Err(ImageError::NoKernel(kernel.clone())),
        Some(kernel) => KernelSource::Own {
            kernel: kernel.clone(),
            modules: options.modules.clone(),
        },
        None => KernelSource::Debian(apt::candidate(&apt::kernel_package(KERNEL_META_PACKAGE)?)?),
    };
    let busybox = apt::candidate(BUSYBOX_PACKAGE)?;

    let mut hasher = Sha256::new();
    let mut feed = |part: &str| {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    };
    feed(LAYOUT_VERSION);
    feed(&busybox.sha256);
    feed(&hash_file(&options.agent)?);
    feed(&GUEST_MODULES.join(","));
    feed(&initramfs::init_script(&[], SWAP_SERIAL));
    match &source {
        KernelSource::Debian(p) => feed(&p.sha256),
        KernelSource::Own { kernel, modules } => {
            feed(&hash_file(kernel)?);
            if let Some(m) = modules {
                feed(&hash_file(&m.join("modules.dep")).unwrap_or_default());
                feed(&m.display().to_string());
            }
        }
    }
    let key = apt::hex(&hasher.finalize())[..16].to_string();

    let images = options.cache_dir.join("images");
    let dir = images.join(&key);
    let manifest = dir.join("manifest.json");
    let cached = manifest.exists();
    let image = if cached {
        read_manifest(&manifest)?
    } else {
        assemble(options, &source, &busybox, &key, &dir)?
    };
    std::fs::write(options.cache_dir.join("current"), &key).map_err(io(&options.cache_dir))?;
    Ok(BuildReport {
        image,
        cached,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A kernel ready to boot: its file, its modules' tree (if any) and where it came from.
struct Kernel {
    file: PathBuf,
    modules_root: Option<PathBuf>,
    source: String,
}

fn assemble(
    options: &BuildOptions,
    source: &KernelSource,
    busybox: &apt::Package,
    key: &str,
    dir: &Path,
) -> Result<Image, ImageError> {
    let debs = options.cache_dir.join("debs");
    std::fs::create_dir_all(&debs).map_err(io(&debs))?;
    let work = options.cache_dir.join(format!("work-{key}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(io(&work))?;

    apt::extract(&apt::fetch(busybox, &debs)?, &work.join("busybox"))?;
    let kernel = unpack_kernel(source, &debs, &work)?;
    let module_paths = match &kernel.modules_root {
        Some(root) => {
            let dep_file = root.join("modules.dep");
            let dep =
                modules::parse_dep(&std::fs::read_to_string(&dep_file).map_err(io(&dep_file))?)?;
            let builtin = std::fs::read_to_string(root.join("modules.builtin")).unwrap_or_default();
            modules::load_order(GUEST_MODULES, &dep, &builtin)?
        }
        None => Vec::new(),
    };
    let entries = initrd_entries(options, &work, &kernel, &module_paths)?;
    let image = install(dir, key, &kernel, &module_paths, &entries)?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(image)
}

/// Debian's kernel package unpacked under `work`, with its modules indexed; or the user's own.
fn unpack_kernel(source: &KernelSource, debs: &Path, work: &Path) -> Result<Kernel, ImageError> {
    match source {
        KernelSource::Debian(package) => {
            let root = work.join("kernel");
            apt::extract(&apt::fetch(package, debs)?, &root)?;
            let boot = root.join("boot");
            let file = std::fs::read_dir(&boot)
                .map_err(io(&boot))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz"))
                })
                .ok_or_else(|| ImageError::NoKernel(boot.clone()))?;
            let release = single_release(&root.join("lib/modules"))?;
            depmod(&root, &release)?;
            Ok(Kernel {
                file,
                modules_root: Some(root.join("lib/modules").join(release)),
                source: format!("{} {}", package.name, package.version),
            })
        }
        KernelSource::Own { kernel, modules } => Ok(Kernel {
            file: kernel.clone(),
            modules_root: modules.clone(),
            source: kernel.display().to_string(),
        }),
    }
}

/// What the initramfs holds: busybox, the agent, the modules in load order and the init script.
fn initrd_entries(
    options: &BuildOptions,
    work: &Path,
    kernel: &Kernel,
    module_paths: &[String],
) -> Result<Vec<Entry>, ImageError> {
    let read = |p: &Path| std::fs::read(p).map_err(io(p));
    let mut entries: Vec<Entry> = [
        "bin",
        "dev",
        "etc",
        "lib",
        "lib/modules",
        "proc",
        "sbin",
        "sys",
        "tmp",
    ]
    .into_iter()
    .map(Entry::dir)
    .collect();
    entries.push(Entry {
        path: "dev/console".into(),
        node: Node::CharDevice { major: 5, minor: 1 },
    });
    entries.push(Entry::file(
        "bin/busybox",
        read(&work.join("busybox/bin/busybox"))?,
        true,
    ));
    entries.push(Entry::file(AGENT_PATH, read(&options.agent)?, true));
    if let Some(root) = &kernel.modules_root {
        for m in module_paths {
            let name = format!("lib/modules/{}.ko", modules::module_name(m));
            entries.push(Entry::file(&name, read(&root.join(m))?, false));
        }
    }
    entries.push(Entry::file(
        "init",
        initramfs::init_script(module_paths, SWAP_SERIAL).into_bytes(),
        true,
    ));
    Ok(entries)
}

/// Writes the image into a staging directory and renames it into place, so that a build cut
/// short never leaves a half-written image under its key.
fn install(
    dir: &Path,
    key: &str,
    kernel: &Kernel,
    module_paths: &[String],
    entries: &[Entry],
) -> Result<Image, ImageError> {
    let staging = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    let initrd_tmp = staging.join("initrd.cpio");
    let file = std::fs::File::create(&initrd_tmp).map_err(io(&initrd_tmp))?;
    let out = initramfs::write_archive(entries, std::io::BufWriter::new(file))
        .map_err(io(&initrd_tmp))?;
    out.into_inner().map_err(|e| ImageError::Io {
        path: initrd_tmp.clone(),
        source: e.into_error(),
    })?;
    std::fs::copy(&kernel.file, staging.join("vmlinuz")).map_err(io(&kernel.file))?;

    let image = Image {
        key: key.to_string(),
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.cpio"),
        kernel_source: kernel.source.clone(),
        modules: module_paths
            .iter()
            .map(|m| modules::module_name(m))
            .collect(),
        initrd_bytes: std::fs::metadata(&initrd_tmp)
            .map_err(io(&initrd_tmp))?
            .len(),
    };
    let manifest = serde_json::to_string_pretty(&image).expect("image manifest serializes");
    std::fs::write(staging.join("manifest.json"), manifest).map_err(io(&staging))?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&staging, dir).map_err(io(dir))?;
    Ok(image)
}

fn single_release(modules_dir: &Path) -> Result<String, ImageError> {
    let releases: Vec<String> = std::fs::read_dir(modules_dir)
        .map_err(io(modules_dir))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    match releases.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(ImageError::KernelRelease(releases.len())),
    }
}

/// Debian's package leaves modules.dep to its postinst; depmod writes it into the unpacked tree.
fn depmod(root: &Path, release: &str) -> Result<(), ImageError> {
    let out = Command::new("depmod")
        .arg("-b")
        .arg(root)
        .arg(release)
        .output()
        .map_err(|e| ImageError::Depmod(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ImageError::Depmod(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}
