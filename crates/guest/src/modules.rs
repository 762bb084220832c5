//! Kernel modules: which files the guest needs and in which order `insmod` must load them,
//! resolved from `modules.dep` (written by `depmod`).

use std::collections::{BTreeMap, BTreeSet};

/// What the guest needs: PCI transport, balloon, disks, the agent's serial port, virtio-mem, zram.
pub const GUEST_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_balloon",
    "virtio_blk",
    "virtio_console",
    "virtio_mem",
    "zram",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModulesError {
    #[error("module {0} is neither in modules.dep nor built into the kernel; is this kernel built with it?")]
    Missing(String),
    #[error("modules.dep line {line} is malformed: '{text}'")]
    Malformed { line: usize, text: String },
    #[error("modules.dep has a dependency cycle through {0}")]
    Cycle(String),
}

/// A module's name as the kernel knows it: file stem without `.ko*`, dashes as underscores.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}

/// Module path -> the paths it depends on, from `modules.dep`.
pub fn parse_dep(text: &str) -> Result<BTreeMap<String, Vec<String>>, ModulesError> {
    let mut map = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (module, deps) = line
            .split_once(':')
            .ok_or_else(|| ModulesError::Malformed {
                line: i + 1,
                text: line.to_string(),
            })?;
        map.insert(
            module.trim().to_string(),
            deps.split_whitespace().map(str::to_string).collect(),
        );
    }
    Ok(map)
}

/// Paths of `wanted` modules and everything they need, each after its dependencies.
/// Modules listed in `builtin` (the kernel's `modules.builtin`) need no file.
pub fn load_order(
    wanted: &[&str],
    dep: &BTreeMap<String, Vec<String>>,
    builtin: &str,
) -> Result<Vec<String>, ModulesError> {
    let by_name: BTreeMap<String, &String> = dep.keys().map(|p| (module_name(p), p)).collect();
    let builtins: BTreeSet<String> = builtin.lines().map(module_name).collect();
    let mut order = Vec::new();
    let mut state: BTreeMap<String, bool> = BTreeMap::new(); // false: in progress, true: done

    fn visit(
        path: &str,
        dep: &BTreeMap<String, Vec<String>>,
        state: &mut BTreeMap<String, bool>,
        order: &mut Vec<String>,
    ) -> Result<(), ModulesError> {
        match state.get(path) {
            Some(true) => return Ok(()),
            Some(false) => return Err(ModulesError::Cycle(module_name(path))),
            None => {}
        }
        state.insert(path.to_string(), false);
        for d in dep.get(path).into_iter().flatten() {
            visit(d, dep, state, order)?;
        }
        state.insert(path.to_string(), true);
        order.push(path.to_string());
        Ok(())
    }

    for name in wanted {
        match by_name.get(*name) {
            Some(path) => visit(path, dep, &mut state, &mut order)?,
            None if builtins.contains(*name) => {}
            None => return Err(ModulesError::Missing(name.to_string())),
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines as depmod writes them for Debian's 6.1 kernel.
    const DEP: &str = "\
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_balloon.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/zram/zram.ko: kernel/mm/zsmalloc.ko
kernel/mm/zsmalloc.ko:
";

    fn names(order: &[String]) -> Vec<String> {
        order.iter().map(|p| module_name(p)).collect()
    }

    #[test]
    fn dependencies_load_first_and_once() {
        let dep = parse_dep(DEP).unwrap();
        let order = load_order(&["virtio_pci", "virtio_balloon", "zram"], &dep, "").unwrap();
        assert_eq!(
            names(&order),
            [
                "virtio_pci_legacy_dev",
                "virtio_pci_modern_dev",
                "virtio_ring",
                "virtio",
                "virtio_pci",
                "virtio_balloon",
                "zsmalloc",
                "zram"
            ]
        );
    }

    #[test]
    fn builtins_need_no_file_and_unknowns_are_errors() {
        let dep = parse_dep(DEP).unwrap();
        assert_eq!(
            load_order(
                &["virtio_mem"],
                &dep,
                "kernel/drivers/virtio/virtio_mem.ko\n"
            )
            .unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            load_order(&["virtio_mem"], &dep, ""),
            Err(ModulesError::Missing("virtio_mem".into()))
        );
    }

    #[test]
    fn cycles_and_garbage_are_reported() {
        let dep = parse_dep("a.ko: b.ko\nb.ko: a.ko\n").unwrap();
        assert!(matches!(
            load_order(&["a"], &dep, ""),
            Err(ModulesError::Cycle(_))
        ));
        assert!(matches!(
            parse_dep("no colon here"),
            Err(ModulesError::Malformed { line: 1, .. })
        ));
    }

    #[test]
    fn names_follow_the_kernel() {
        assert_eq!(
            module_name("kernel/drivers/gpu/drm/virtio/virtio-gpu.ko.xz"),
            "virtio_gpu"
        );
    }
}
