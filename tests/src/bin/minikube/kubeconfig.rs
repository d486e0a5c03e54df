//! The kubeconfig entries of a profile: cluster, user and context all named after the profile,
//! merged into an existing file (YAML, kubectl's format; every other entry and key is kept as
//! it was), certificates by path unless `--embed-certs`, `current-context` switched unless
//! `--keep-context`. Writes hold a flock keyed on the kubeconfig's path (in the lock
//! directory) and replace the file atomically (mode 0600); missing parent directories are
//! created.

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_yaml_ng::{Mapping, Value};

use crate::lock;
use crate::Failure;

/// A certificate or key: by path, or embedded (`*-data`, base64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Material {
    Path(PathBuf),
    Data(Vec<u8>),
}

impl Material {
    pub fn read(path: &Path, embed: bool) -> Result<Material, Failure> {
        if embed {
            fs::read(path)
                .map(Material::Data)
                .map_err(|e| Failure::error(format!("read {}: {e}", path.display())))
        } else {
            Ok(Material::Path(path.to_path_buf()))
        }
    }

    /// Sets `key` (path form) or `key-data` (embedded form) in `m`, removing the other form.
    fn put(&self, m: &mut Mapping, key: &str) {
        let data_key = format!("{key}-data");
        match self {
            Material::Path(p) => {
                m.shift_remove(data_key.as_str());
                m.insert(s(key), s(&p.to_string_lossy()));
            }
            Material::Data(d) => {
                m.shift_remove(key);
                m.insert(
                    s(&data_key),
                    s(&base64::engine::general_purpose::STANDARD.encode(d)),
                );
            }
        }
    }
}

/// What a profile puts into the kubeconfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileEntry {
    pub name: String,
    pub server: String,
    pub certificate_authority: Material,
    pub client_certificate: Material,
    pub client_key: Material,
    /// RFC 1123 time for minikube's `cluster_info` extension.
    pub last_update: String,
    pub version: String,
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

/// Parses a kubeconfig; an empty (or whitespace-only) file is an empty config.
pub fn parse(text: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Ok(empty());
    }
    let v: Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    match v {
        Value::Mapping(_) => Ok(v),
        Value::Null => Ok(empty()),
        _ => Err("not a kubeconfig: the top level is not a mapping".into()),
    }
}

/// A config with no entries, keys in kubectl's order.
pub fn empty() -> Value {
    let mut m = Mapping::new();
    m.insert(s("apiVersion"), s("v1"));
    m.insert(s("clusters"), Value::Sequence(Vec::new()));
    m.insert(s("contexts"), Value::Sequence(Vec::new()));
    m.insert(s("current-context"), s(""));
    m.insert(s("kind"), s("Config"));
    m.insert(s("preferences"), Value::Mapping(Mapping::new()));
    m.insert(s("users"), Value::Sequence(Vec::new()));
    Value::Mapping(m)
}

fn root(doc: &mut Value) -> &mut Mapping {
    if !doc.is_mapping() {
        *doc = empty();
    }
    doc.as_mapping_mut().expect("mapping")
}

/// The named list `key` (clusters, users, contexts), created if missing or null.
fn list<'a>(doc: &'a mut Value, key: &str) -> &'a mut Vec<Value> {
    let m = root(doc);
    let v = m.entry(s(key)).or_insert(Value::Sequence(Vec::new()));
    if !v.is_sequence() {
        *v = Value::Sequence(Vec::new());
    }
    v.as_sequence_mut().expect("sequence")
}

fn name_of(v: &Value) -> Option<&str> {
    v.get("name").and_then(Value::as_str)
}

/// Replaces the entry called `name` in list `key` (keeping its place), or appends it.
fn upsert_named(doc: &mut Value, key: &str, name: &str, body_key: &str, body: Mapping) {
    // kubectl writes the keys in alphabetical order: `cluster`/`context` before `name`,
    // `name` before `user`.
    let mut entry = Mapping::new();
    if body_key < "name" {
        entry.insert(s(body_key), Value::Mapping(body));
        entry.insert(s("name"), s(name));
    } else {
        entry.insert(s("name"), s(name));
        entry.insert(s(body_key), Value::Mapping(body));
    }
    let items = list(doc, key);
    match items.iter_mut().find(|v| name_of(v) == Some(name)) {
        Some(slot) => *slot = Value::Mapping(entry),
        None => items.push(Value::Mapping(entry)),
    }
}

fn info_extension(e: &ProfileEntry) -> Value {
    let mut ext = Mapping::new();
    ext.insert(s("last-update"), s(&e.last_update));
    ext.insert(s("provider"), s("minikube.sigs.k8s.io"));
    ext.insert(s("version"), s(&e.version));
    let mut item = Mapping::new();
    item.insert(s("extension"), Value::Mapping(ext));
    item.insert(s("name"), s("cluster_info"));
    Value::Sequence(vec![Value::Mapping(item)])
}

/// Adds or replaces the profile's cluster, user and context; switches `current-context` to it
/// when `set_current`.
pub fn upsert(doc: &mut Value, e: &ProfileEntry, set_current: bool) {
    let mut cluster = Mapping::new();
    e.certificate_authority
        .put(&mut cluster, "certificate-authority");
    cluster.insert(s("extensions"), info_extension(e));
    cluster.insert(s("server"), s(&e.server));
    upsert_named(doc, "clusters", &e.name, "cluster", cluster);

    let mut context = Mapping::new();
    context.insert(s("cluster"), s(&e.name));
    context.insert(s("extensions"), info_extension(e));
    context.insert(s("namespace"), s("default"));
    context.insert(s("user"), s(&e.name));
    upsert_named(doc, "contexts", &e.name, "context", context);

    let mut user = Mapping::new();
    e.client_certificate.put(&mut user, "client-certificate");
    e.client_key.put(&mut user, "client-key");
    upsert_named(doc, "users", &e.name, "user", user);

    let m = root(doc);
    for (k, v) in [("apiVersion", "v1"), ("kind", "Config")] {
        if !m.contains_key(k) {
            m.insert(s(k), s(v));
        }
    }
    if set_current {
        m.insert(s("current-context"), s(&e.name));
    }
}

/// Removes the profile's cluster, user and context; clears `current-context` if it was this
/// profile's.
pub fn remove(doc: &mut Value, name: &str) -> bool {
    let mut removed = false;
    for key in ["clusters", "contexts", "users"] {
        let items = list(doc, key);
        let before = items.len();
        items.retain(|v| name_of(v) != Some(name));
        removed |= items.len() != before;
    }
    let m = root(doc);
    if m.get("current-context").and_then(Value::as_str) == Some(name) {
        m.insert(s("current-context"), s(""));
        removed = true;
    }
    removed
}

/// The `server` of cluster `name`.
pub fn server_of(doc: &Value, name: &str) -> Option<String> {
    doc.get("clusters")?
        .as_sequence()?
        .iter()
        .find(|v| name_of(v) == Some(name))?
        .get("cluster")?
        .get("server")?
        .as_str()
        .map(String::from)
}

pub fn current_context(doc: &Value) -> Option<String> {
    doc.get("current-context")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .map(String::from)
}

pub fn render(doc: &Value) -> Result<String, String> {
    serde_yaml_ng::to_string(doc).map_err(|e| e.to_string())
}

/// Reads the kubeconfig (missing = empty).
pub fn read(path: &Path) -> Result<Value, Failure> {
    match fs::read_to_string(path) {
        Ok(text) => {
            parse(&text).map_err(|e| Failure::error(format!("kubeconfig {}: {e}", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(empty()),
        Err(e) => Err(Failure::error(format!("read {}: {e}", path.display()))),
    }
}

/// Read-modify-write under the kubeconfig lock. `change` returns whether to write.
pub fn update(
    path: &Path,
    lock_dir: &Path,
    change: impl FnOnce(&mut Value) -> bool,
) -> Result<(), Failure> {
    let _guard = lock::exclusive(lock_dir, &format!("kubeconfig-{}", lock::key(path)))?;
    let mut doc = read(path)?;
    if !change(&mut doc) {
        return Ok(());
    }
    let text = render(&doc).map_err(Failure::error)?;
    crate::config::write_atomic(path, text.as_bytes(), 0o600).map_err(Failure::error)
}

/// `Mon, 02 Jan 2006 15:04:05 UTC` for a Unix time (Go's time.RFC1123 in UTC).
pub fn rfc1123(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} UTC",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, embed: bool) -> ProfileEntry {
        let m = |p: &str| {
            if embed {
                Material::Data(p.as_bytes().to_vec())
            } else {
                Material::Path(PathBuf::from(p))
            }
        };
        ProfileEntry {
            name: name.into(),
            server: "https://192.168.39.1:8443".into(),
            certificate_authority: m("/h/.minikube/ca.crt"),
            client_certificate: m("/h/.minikube/profiles/p/client.crt"),
            client_key: m("/h/.minikube/profiles/p/client.key"),
            last_update: "Tue, 25 Nov 2025 19:00:00 UTC".into(),
            version: "v1.38.1".into(),
        }
    }

    const EXISTING: &str = "\
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: AAAA
    server: https://10.0.0.1:6443
  name: other
contexts:
- context:
    cluster: other
    user: other-admin
  name: other
current-context: other
kind: Config
preferences:
  colors: true
users:
- name: other-admin
  user:
    token: secret
";

    #[test]
    fn merge_keeps_other_entries_and_switches_context() {
        let mut doc = parse(EXISTING).unwrap();
        upsert(&mut doc, &entry("p", false), true);
        let text = render(&doc).unwrap();
        let back = parse(&text).unwrap();
        assert_eq!(
            server_of(&back, "other").as_deref(),
            Some("https://10.0.0.1:6443")
        );
        assert_eq!(
            server_of(&back, "p").as_deref(),
            Some("https://192.168.39.1:8443")
        );
        assert_eq!(current_context(&back).as_deref(), Some("p"));
        assert_eq!(back["preferences"]["colors"], Value::Bool(true));
        assert_eq!(back["users"][0]["user"]["token"], s("secret"));
        let users = back["users"].as_sequence().unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users[1]["name"], s("p"));
        assert_eq!(
            users[1]["user"]["client-certificate"],
            s("/h/.minikube/profiles/p/client.crt")
        );
        let ctx = &back["contexts"][1];
        assert_eq!(ctx["name"], s("p"));
        assert_eq!(ctx["context"]["cluster"], s("p"));
        assert_eq!(ctx["context"]["user"], s("p"));
        assert_eq!(
            back["clusters"][1]["cluster"]["certificate-authority"],
            s("/h/.minikube/ca.crt")
        );
    }

    #[test]
    fn keep_context_and_replace_in_place() {
        let mut doc = parse(EXISTING).unwrap();
        upsert(&mut doc, &entry("p", false), false);
        assert_eq!(current_context(&doc).as_deref(), Some("other"));
        // A second start replaces the entries (no duplicates), e.g. with embedded certs now.
        let mut e = entry("p", true);
        e.server = "https://192.168.50.1:8443".into();
        upsert(&mut doc, &e, false);
        assert_eq!(doc["clusters"].as_sequence().unwrap().len(), 2);
        let cluster = &doc["clusters"][1]["cluster"];
        assert_eq!(cluster["server"], s("https://192.168.50.1:8443"));
        assert!(cluster.get("certificate-authority").is_none());
        assert_eq!(
            cluster["certificate-authority-data"],
            s(&base64::engine::general_purpose::STANDARD.encode("/h/.minikube/ca.crt"))
        );
        assert!(doc["users"][1]["user"].get("client-key-data").is_some());
    }

    #[test]
    fn empty_or_missing_file_gives_a_fresh_config() {
        for text in ["", "  \n", "---\n"] {
            let mut doc = parse(text).unwrap();
            upsert(&mut doc, &entry("p", false), true);
            let out = render(&doc).unwrap();
            assert!(out.starts_with("apiVersion: v1\n"), "{out}");
            assert!(out.contains("current-context: p"));
            assert!(out.contains("kind: Config"));
        }
        assert!(parse("- a\n- b\n").is_err());
        assert!(parse("clusters: [").is_err());
    }

    #[test]
    fn json_kubeconfigs_are_yaml_too() {
        let mut doc = parse(r#"{"apiVersion":"v1","kind":"Config","clusters":null}"#).unwrap();
        upsert(&mut doc, &entry("p", false), true);
        assert_eq!(
            server_of(&doc, "p").as_deref(),
            Some("https://192.168.39.1:8443")
        );
    }

    #[test]
    fn remove_takes_only_the_profiles_entries() {
        let mut doc = parse(EXISTING).unwrap();
        upsert(&mut doc, &entry("p", false), true);
        assert!(remove(&mut doc, "p"));
        assert_eq!(current_context(&doc), None);
        assert_eq!(server_of(&doc, "p"), None);
        assert_eq!(
            server_of(&doc, "other").as_deref(),
            Some("https://10.0.0.1:6443")
        );
        assert_eq!(doc["users"].as_sequence().unwrap().len(), 1);
        assert!(!remove(&mut doc, "p"));
        // Another profile being current is left alone.
        let mut doc = parse(EXISTING).unwrap();
        upsert(&mut doc, &entry("p", false), false);
        remove(&mut doc, "p");
        assert_eq!(current_context(&doc).as_deref(), Some("other"));
    }

    #[test]
    fn update_writes_0600_and_creates_parents() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a").join("b").join("config");
        let locks = dir.path().join("locks");
        update(&path, &locks, |doc| {
            upsert(doc, &entry("p", false), true);
            true
        })
        .unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let doc = read(&path).unwrap();
        assert_eq!(current_context(&doc).as_deref(), Some("p"));
    }

    #[test]
    fn rfc1123_dates() {
        assert_eq!(rfc1123(0), "Thu, 01 Jan 1970 00:00:00 UTC");
        assert_eq!(rfc1123(1_764_097_200), "Tue, 25 Nov 2025 19:00:00 UTC");
        assert_eq!(rfc1123(951_782_400), "Tue, 29 Feb 2000 00:00:00 UTC");
    }
}
