//! The kernel command line that carries each machine's own parameters.

use crate::command::shorten;
use crate::{BootParams, ImageError, Result};

/// The kernel's limit for the whole command line on x86 (COMMAND_LINE_SIZE,
/// including the terminating NUL).
const CMDLINE_MAX: usize = 2048;

/// See [`crate::kernel_cmdline`].
pub(crate) fn kernel_cmdline(params: &BootParams<'_>) -> Result<String> {
    validate_hostname(params.hostname)?;
    let key = params.authorized_key.trim_end_matches(['\n', '\r']);
    let key_ok = !key.is_empty()
        && !key.contains(['\n', '\r'])
        && ["ssh-", "ecdsa-", "sk-"].iter().any(|p| key.starts_with(p));
    if !key_ok {
        return Err(ImageError::BootParam {
            name: "authorized_key",
            seen: shorten(key, 60),
            problem: "expected one OpenSSH public key line, e.g. `ssh-ed25519 AAAA... comment`",
        });
    }
    let mut line = format!(
        "console=ttyS0 mkh.hostname={} mkh.authorized_key={}",
        params.hostname,
        base64_encode(format!("{key}\n").as_bytes())
    );
    if let Some(host_key) = params.host_key {
        if !host_key.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
            return Err(ImageError::BootParam {
                name: "host_key",
                seen: shorten(host_key, 40),
                problem: "expected an OpenSSH-format private key (`ssh-keygen -t ed25519`)",
            });
        }
        line.push_str(" mkh.host_key=");
        line.push_str(&base64_encode(host_key.as_bytes()));
    }
    if line.len() >= CMDLINE_MAX {
        return Err(ImageError::BootParam {
            name: "host_key",
            seen: format!("{} bytes of command line", line.len()),
            problem: "the kernel command line is limited to 2047 bytes: use ed25519 keys",
        });
    }
    Ok(line)
}

fn validate_hostname(name: &str) -> Result<()> {
    let ok = (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ImageError::BootParam {
            name: "hostname",
            seen: shorten(name, 80),
            problem: "expected 1-63 letters, digits and '-', not starting or ending with '-'",
        })
    }
}

/// Standard base64 (RFC 4648, with padding), as busybox `base64 -d` reads it.
fn base64_encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBKEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJNTVhp+zP1xgreBa2SiKa3mrz9PyTjJcKnwaxs0G0SX test";
    const HOSTKEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n";

    #[test]
    fn cmdline_carries_base64_keys_without_spaces() {
        let line = kernel_cmdline(&BootParams {
            hostname: "vm-1",
            authorized_key: PUBKEY,
            host_key: Some(HOSTKEY),
        })
        .unwrap();
        let words: Vec<&str> = line.split(' ').collect();
        assert_eq!(words[0], "console=ttyS0");
        assert_eq!(words[1], "mkh.hostname=vm-1");
        assert_eq!(
            words[2],
            format!(
                "mkh.authorized_key={}",
                base64_encode(format!("{PUBKEY}\n").as_bytes())
            )
        );
        assert_eq!(
            words[3],
            format!("mkh.host_key={}", base64_encode(HOSTKEY.as_bytes()))
        );
        assert_eq!(words.len(), 4);
    }

    #[test]
    fn cmdline_without_host_key_and_trailing_newline_key() {
        let with_newline = format!("{PUBKEY}\n");
        let line = kernel_cmdline(&BootParams {
            hostname: "a",
            authorized_key: &with_newline,
            host_key: None,
        })
        .unwrap();
        assert!(!line.contains("mkh.host_key"));
        assert!(line.ends_with(&base64_encode(with_newline.as_bytes())));
    }

    #[test]
    fn cmdline_rejects_bad_input() {
        let bad = |hostname: &str, key: &str, host_key: Option<&str>| {
            kernel_cmdline(&BootParams {
                hostname,
                authorized_key: key,
                host_key,
            })
            .unwrap_err()
        };
        for name in ["", "-a", "a-", "a b", "a.b", "ä", &"x".repeat(64)] {
            assert!(
                matches!(
                    bad(name, PUBKEY, None),
                    ImageError::BootParam {
                        name: "hostname",
                        ..
                    }
                ),
                "{name:?}"
            );
        }
        assert!(matches!(
            bad("h", "AAAA", None),
            ImageError::BootParam {
                name: "authorized_key",
                ..
            }
        ));
        assert!(matches!(
            bad("h", &format!("{PUBKEY}\n{PUBKEY}"), None),
            ImageError::BootParam {
                name: "authorized_key",
                ..
            }
        ));
        assert!(matches!(
            bad("h", PUBKEY, Some("-----BEGIN RSA PRIVATE KEY-----")),
            ImageError::BootParam {
                name: "host_key",
                ..
            }
        ));
        let huge = format!(
            "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n",
            "A".repeat(2000)
        );
        assert!(matches!(
            bad("h", PUBKEY, Some(&huge)),
            ImageError::BootParam {
                name: "host_key",
                ..
            }
        ));
        assert!(bad("h", "AAAA", None).to_string().contains("ssh-ed25519"));
    }
}
