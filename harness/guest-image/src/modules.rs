//! Kernel modules: which `.ko` files of the kernel package the guest gets,
//! their dependencies (read from each module's ELF `.modinfo` section with the
//! `object` crate, so the host needs no kmod), the load order for boot, and
//! the `modules.dep` that busybox `modprobe` and the kernel's autoload use.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::Path;

use object::elf::FileHeader64;
use object::read::elf::{FileHeader as _, SectionHeader as _};
use object::Endianness;

use crate::files::{copy_with_mode, create_parents, has_ext, io_err, read_dir_sorted};
use crate::packages::Packages;
use crate::recipe::{ModuleUse, MODULES};
use crate::{ImageError, Result};

/// Kernel module names use '_' and '-' interchangeably (`virtio-rng.ko` is
/// module `virtio_rng`).
fn module_key(name: &str) -> String {
    name.trim_end_matches(".ko").replace('-', "_")
}

/// Modules in load order: each module after its dependencies, otherwise in
/// the order asked for. `deps` returns a module's direct dependencies.
fn load_order<F>(wanted: &[String], mut deps: F) -> Result<Vec<String>>
where
    F: FnMut(&str) -> Result<Vec<String>>,
{
    fn visit<F>(
        name: &str,
        deps: &mut F,
        done: &mut BTreeSet<String>,
        busy: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) -> Result<()>
    where
        F: FnMut(&str) -> Result<Vec<String>>,
    {
        if done.contains(name) || !busy.insert(name.to_string()) {
            return Ok(()); // done, or a cycle (impossible for modules): ignore
        }
        for dep in deps(name)? {
            visit(&dep, deps, done, busy, order)?;
        }
        done.insert(name.to_string());
        order.push(name.to_string());
        Ok(())
    }
    let (mut done, mut busy, mut order) = (BTreeSet::new(), BTreeSet::new(), Vec::new());
    for name in wanted {
        visit(name, &mut deps, &mut done, &mut busy, &mut order)?;
    }
    Ok(order)
}

/// The `.modinfo` strings of an ELF64 kernel module (`depends=a,b`,
/// `name=x`, ...), without needing modinfo on the host. The error says what
/// is wrong with the file.
fn modinfo(elf: &[u8]) -> Result<Vec<String>, String> {
    let header = FileHeader64::<Endianness>::parse(elf)
        .map_err(|e| format!("not an uncompressed ELF64 module ({e})"))?;
    let endian = header.endian().map_err(|e| e.to_string())?;
    let sections = header
        .sections(endian, elf)
        .map_err(|e| format!("bad section table ({e})"))?;
    let (_, section) = sections
        .section_by_name(endian, b".modinfo")
        .ok_or_else(|| "no .modinfo section".to_string())?;
    let data = section
        .data(endian, elf)
        .map_err(|e| format!("bad .modinfo section ({e})"))?;
    Ok(data
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

/// Direct dependencies from `.modinfo` strings.
fn modinfo_depends(info: &[String]) -> Vec<String> {
    info.iter()
        .find_map(|s| s.strip_prefix("depends="))
        .map(|d| {
            d.split(',')
                .filter(|s| !s.is_empty())
                .map(module_key)
                .collect()
        })
        .unwrap_or_default()
}

/// The `modules.dep` line of a module: its path, then its dependencies in
/// the order kmod writes them (reverse load order: modprobe loads from the
/// end of the list).
fn modules_dep_line(path: &str, load_order_of_deps: &[&str]) -> String {
    let mut line = format!("{path}:");
    for dep in load_order_of_deps.iter().rev() {
        line.push(' ');
        line.push_str(dep);
    }
    line
}

/// Copies the wanted modules and their dependencies into the guest, writes
/// `modules.dep` (for busybox modprobe and kernel autoload), copies
/// `modules.builtin` and writes `/etc/mkh/modules.boot` (insmod order) and
/// `/etc/mkh/modules.node` (names, for `modprobe` on a node).
pub(crate) fn stage_modules(unpacked: &Path, root: &Path, packages: &Packages) -> Result<()> {
    let release = packages.kernel_release();
    let src_dir = unpacked.join("lib/modules").join(release);
    if !src_dir.is_dir() {
        return Err(ImageError::MissingFile {
            what: "the kernel modules",
            path: src_dir,
        });
    }
    // Index every .ko of the package by module name.
    let mut index: HashMap<String, String> = HashMap::new();
    let mut stack = vec![src_dir.join("kernel")];
    while let Some(dir) = stack.pop() {
        for path in read_dir_sorted(&dir)? {
            if path.is_dir() {
                stack.push(path);
            } else if has_ext(&path, "ko") {
                let rel = path
                    .strip_prefix(&src_dir)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .into_owned();
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                index.insert(module_key(&name), rel);
            }
        }
    }
    let builtin_path = src_dir.join("modules.builtin");
    let builtin_text =
        fs::read_to_string(&builtin_path).map_err(|e| io_err("read", &builtin_path, e))?;
    let builtin: BTreeSet<String> = builtin_text
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .map(module_key)
        .collect();

    let mut boot = Vec::new();
    let mut ship = Vec::new();
    let mut node = Vec::new();
    for (name, usage) in MODULES {
        let key = module_key(name);
        if builtin.contains(&key) {
            continue; // nothing to load
        }
        if !index.contains_key(&key) {
            if *usage == ModuleUse::BootRequired {
                return Err(ImageError::MissingModule {
                    module: name.to_string(),
                    package: packages.kernel.clone(),
                });
            }
            continue;
        }
        match usage {
            ModuleUse::BootRequired | ModuleUse::BootOptional => boot.push(key),
            ModuleUse::ShipOptional => ship.push(key),
            ModuleUse::Node => {
                ship.push(key);
                node.push(name.to_string());
            }
        }
    }

    let mut deps_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut direct_deps = |name: &str| -> Result<Vec<String>> {
        if let Some(d) = deps_of.get(name) {
            return Ok(d.clone());
        }
        let deps = match index.get(name) {
            None if builtin.contains(name) => Vec::new(),
            None => {
                return Err(ImageError::MissingModule {
                    module: name.to_string(),
                    package: packages.kernel.clone(),
                })
            }
            Some(rel) => {
                let path = src_dir.join(rel);
                let elf = fs::read(&path).map_err(|e| io_err("read", &path, e))?;
                let info = modinfo(&elf).map_err(|problem| ImageError::BadModule {
                    path: path.clone(),
                    problem,
                })?;
                modinfo_depends(&info)
                    .into_iter()
                    .filter(|d| !builtin.contains(d))
                    .collect()
            }
        };
        deps_of.insert(name.to_string(), deps.clone());
        Ok(deps)
    };
    let boot_order = load_order(&boot, &mut direct_deps)?;
    let mut all = boot.clone();
    all.extend(ship.iter().cloned());
    let all_order = load_order(&all, &mut direct_deps)?;

    let dst_dir = root.join("usr/lib/modules").join(release);
    let mut dep_lines = Vec::new();
    for name in &all_order {
        let rel = &index[name];
        let dst = dst_dir.join(rel);
        create_parents(&dst)?;
        copy_with_mode(&src_dir.join(rel), &dst, 0o644, "copy module to")?;
        // Its dependencies' load order is the global order restricted to them.
        let closure = load_order(std::slice::from_ref(name), &mut direct_deps)?;
        let deps: Vec<&str> = closure
            .iter()
            .filter(|d| *d != name)
            .map(|d| index[d].as_str())
            .collect();
        dep_lines.push(modules_dep_line(rel, &deps));
    }
    let modules_dep = dst_dir.join("modules.dep");
    fs::write(&modules_dep, dep_lines.join("\n") + "\n")
        .map_err(|e| io_err("write", &modules_dep, e))?;
    let dst_builtin = dst_dir.join("modules.builtin");
    fs::write(&dst_builtin, builtin_text).map_err(|e| io_err("write", &dst_builtin, e))?;

    let boot_list: String = boot_order
        .iter()
        .map(|n| format!("{}\n", index[n]))
        .collect();
    let boot_file = root.join("etc/mkh/modules.boot");
    fs::write(&boot_file, boot_list).map_err(|e| io_err("write", &boot_file, e))?;
    let node_file = root.join("etc/mkh/modules.node");
    let node_list: String = node.iter().map(|n| format!("{n}\n")).collect();
    fs::write(&node_file, node_list).map_err(|e| io_err("write", &node_file, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_load_after_their_dependencies_in_asked_order() {
        let graph: HashMap<&str, Vec<&str>> = [
            ("virtio_net", vec!["virtio_ring", "virtio", "net_failover"]),
            ("net_failover", vec!["failover"]),
            ("virtio", vec!["virtio_ring"]),
            (
                "virtio_pci",
                vec!["virtio_ring", "virtio_pci_modern_dev", "virtio"],
            ),
        ]
        .into_iter()
        .collect();
        let deps = |n: &str| {
            Ok(graph
                .get(n)
                .map(|d| d.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default())
        };
        let wanted: Vec<String> = ["virtio_pci", "virtio_net", "sch_netem"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let order = load_order(&wanted, deps).unwrap();
        assert_eq!(
            order,
            [
                "virtio_ring",
                "virtio_pci_modern_dev",
                "virtio",
                "virtio_pci",
                "failover",
                "net_failover",
                "virtio_net",
                "sch_netem"
            ]
        );
    }

    #[test]
    fn modules_dep_lists_dependencies_last_loaded_first() {
        assert_eq!(
            modules_dep_line("a.ko", &["x.ko", "y.ko"]),
            "a.ko: y.ko x.ko"
        );
        assert_eq!(modules_dep_line("a.ko", &[]), "a.ko:");
        assert_eq!(module_key("virtio-rng.ko"), "virtio_rng");
    }

    /// A minimal ELF64 relocatable object, as a `.ko` is: a section-name
    /// table and a section `name` (`.modinfo`) holding `data`.
    fn fake_elf(name: &str, data: &[u8]) -> Vec<u8> {
        let shstrtab = format!("\0.shstrtab\0{name}\0").into_bytes();
        let mut elf = vec![0u8; 64];
        elf[..7].copy_from_slice(b"\x7fELF\x02\x01\x01"); // ELF64, little-endian, version 1
        elf[0x10..0x12].copy_from_slice(&1u16.to_le_bytes()); // ET_REL
        elf[0x12..0x14].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        elf[0x14..0x18].copy_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
        let strtab_off = elf.len();
        elf.extend_from_slice(&shstrtab);
        let data_off = elf.len();
        elf.extend_from_slice(data);
        let shoff = elf.len();
        let mut section = |name: u32, kind: u32, off: usize, size: usize| {
            let mut h = [0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[4..8].copy_from_slice(&kind.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&h);
        };
        section(0, 0, 0, 0); // SHN_UNDEF
        section(1, 3, strtab_off, shstrtab.len()); // SHT_STRTAB
        section(11, 1, data_off, data.len()); // SHT_PROGBITS
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x34..0x36].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes()); // e_shnum
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes()); // e_shstrndx
        elf
    }

    fn fake_module(modinfo_data: &[u8]) -> Vec<u8> {
        fake_elf(".modinfo", modinfo_data)
    }

    #[test]
    fn modinfo_depends_are_read_from_the_elf_section() {
        let elf =
            fake_module(b"license=GPL\0depends=virtio_ring,virtio,net-failover\0name=virtio_net\0");
        let info = modinfo(&elf).unwrap();
        assert_eq!(
            info,
            [
                "license=GPL",
                "depends=virtio_ring,virtio,net-failover",
                "name=virtio_net"
            ]
        );
        assert_eq!(
            modinfo_depends(&info),
            ["virtio_ring", "virtio", "net_failover"]
        );
        let none = modinfo(&fake_module(b"depends=\0name=failover\0")).unwrap();
        assert!(modinfo_depends(&none).is_empty());
    }

    #[test]
    fn unreadable_modules_say_why() {
        let not_elf = modinfo(b"not an elf").unwrap_err();
        assert!(
            not_elf.contains("not an uncompressed ELF64 module"),
            "{not_elf}"
        );
        // An xz-compressed module (.ko.xz) is not ELF either.
        assert!(modinfo(b"\xfd7zXZ\0\0\x04").is_err());
        let truncated = modinfo(&fake_module(b"x")[..70]).unwrap_err();
        assert!(truncated.contains("section table"), "{truncated}");
        let without = modinfo(&fake_elf(".text", b"\x90")).unwrap_err();
        assert_eq!(without, "no .modinfo section");
        // A real ELF64 file (this test binary) parses, and has no .modinfo.
        let exe = fs::read("/proc/self/exe").unwrap();
        assert_eq!(modinfo(&exe).unwrap_err(), "no .modinfo section");
    }
}
