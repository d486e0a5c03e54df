//! Names of the things mkh creates. Networks are named from a short random id, and so are
//! environments (and with them their machines and minikube profiles) unless the user names one
//! (`mkh up --name`), so names do not collide between tests, runs or users on one libvirt host.

use rand::Rng;

use crate::error::{Error, Result};

/// Linux limits interface names to 15 bytes (IFNAMSIZ - 1).
pub const MAX_BRIDGE_LEN: usize = 15;
/// Names of environments and libvirt objects: short enough for logs and `virsh` columns.
pub const MAX_NAME_LEN: usize = 63;

/// A short random id, `[a-z0-9]{6}`: 36^6 (2.2 billion) values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EnvId(String);

impl EnvId {
    pub fn random() -> EnvId {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rng();
        // The first character is a letter so that ids never read as numbers.
        let first = ALPHABET[rng.random_range(0..26)] as char;
        let rest: String = (0..5)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect();
        EnvId(format!("{first}{rest}"))
    }

    /// The id in a network name mkh made (`mkh-<id>-nat`, `mkh-<id>-priv`).
    pub fn of_network(name: &str) -> Option<EnvId> {
        let rest = name.strip_prefix("mkh-")?;
        let id = rest
            .strip_suffix("-nat")
            .or_else(|| rest.strip_suffix("-priv"))?;
        (id.len() == 6
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        .then(|| EnvId(id.to_owned()))
    }

    /// `mkh-<id>`: the default environment name and the prefix of every object name.
    pub fn env_name(&self) -> String {
        format!("mkh-{}", self.0)
    }

    /// The NAT network, also its bridge: `mkh-<id>-nat` (14 characters).
    pub fn nat_network(&self) -> String {
        format!("mkh-{}-nat", self.0)
    }

    /// The isolated network, also its bridge: `mkh-<id>-priv` (15 characters).
    pub fn private_network(&self) -> String {
        format!("mkh-{}-priv", self.0)
    }
}

impl std::fmt::Display for EnvId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a name that reaches libvirt (escaped) and mkh's output. Markup characters are allowed
/// (escaping makes them harmless); control characters, `/` and over-long names are not.
pub fn validate_object_name(what: &'static str, name: &str) -> Result<()> {
    let invalid = |problem: String| Error::InvalidInput {
        what,
        value: name.to_owned(),
        problem,
        fix: "use 1 to 63 printable characters without '/', e.g. letters, digits and '-'",
    };
    if name.is_empty() {
        return Err(invalid("it is empty".into()));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(invalid(format!(
            "it is {} characters long, the limit is {MAX_NAME_LEN}",
            name.chars().count()
        )));
    }
    if let Some(c) = name.chars().find(|c| c.is_control() || *c == '/') {
        return Err(invalid(format!("it contains {c:?}")));
    }
    Ok(())
}

/// Checks a Linux bridge name: at most 15 bytes of `[A-Za-z0-9_.-]`.
pub fn validate_bridge_name(name: &str) -> Result<()> {
    let invalid = |problem: String| Error::InvalidInput {
        what: "bridge name",
        value: name.to_owned(),
        problem,
        fix: "use 1 to 15 characters from letters, digits, '-', '_' and '.'",
    };
    if name.is_empty() {
        return Err(invalid("it is empty".into()));
    }
    if name.len() > MAX_BRIDGE_LEN {
        return Err(invalid(format!(
            "it is {} bytes long, Linux allows {MAX_BRIDGE_LEN}",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(invalid(format!("it contains {c:?}")));
    }
    Ok(())
}

/// Checks a user-chosen environment name (`mkh up --name`): it also names files, the guest's
/// hostname and minikube's profile, so it is held to the strictest of their rules (a DNS label
/// of at least two characters, as minikube's `ProfileNameValid`).
pub fn validate_env_name(name: &str) -> Result<()> {
    let invalid = |problem: String| {
        Error::InvalidInput {
        what: "environment name",
        value: name.to_owned(),
        problem,
        fix:
            "use 2 to 40 characters from lower-case letters, digits and '-', starting with a letter and ending with a letter or digit",
    }
    };
    if name.len() < 2 {
        return Err(invalid("it is shorter than 2 characters".into()));
    }
    if name.len() > 40 {
        return Err(invalid(format!(
            "it is {} characters long, the limit is 40",
            name.len()
        )));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(invalid("it does not start with a lower-case letter".into()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(invalid(format!("it contains {c:?}")));
    }
    if name.ends_with('-') {
        return Err(invalid("it ends with '-'".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_fit_linux_bridge_limits() {
        for _ in 0..200 {
            let id = EnvId::random();
            assert_eq!(id.to_string().len(), 6);
            assert!(id.to_string().starts_with(|c: char| c.is_ascii_lowercase()));
            validate_bridge_name(&id.nat_network()).unwrap();
            validate_bridge_name(&id.private_network()).unwrap();
            validate_env_name(&id.env_name()).unwrap();
        }
    }

    #[test]
    fn ids_differ() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| EnvId::random()).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn bad_names_are_refused_with_the_input_named() {
        let err = validate_object_name("network name", "")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("network name") && err.contains("empty"),
            "{err}"
        );
        let long = "n".repeat(64);
        let err = validate_object_name("network name", &long)
            .unwrap_err()
            .to_string();
        assert!(err.contains("64 characters"), "{err}");
        assert!(validate_object_name("network name", "a\nb").is_err());
        assert!(validate_object_name("network name", "a/b").is_err());
        validate_object_name("network name", "a<b&c'd").unwrap();
        assert!(validate_bridge_name("mkh-abcdef-privx").is_err());
        assert!(validate_bridge_name("br<0").is_err());
        assert!(validate_env_name("Upper").is_err());
        assert!(validate_env_name("my-env-1").is_ok());
        // The guest's hostname and minikube's profile: a DNS label, longer than one character.
        for bad in ["a-", "a", "", "1abc", "a_b", "a.b"] {
            let err = validate_env_name(bad).unwrap_err().to_string();
            assert!(
                err.contains("environment name") && err.contains("use 2 to 40"),
                "{err}"
            );
        }
    }
}
