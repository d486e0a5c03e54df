//! The kernel command line that carries each machine's own parameters.

use crate::command::shorten;
use crate::{BootParams, ImageError, Result};

/// The kernel's limit for the whole command line on x86 (COMMAND_LINE_SIZE,
/// including the terminating NUL).
const CMDLINE_MAX: usize = 2048;

/// What every boot's command line starts with: the console, with only the kernel's warnings on
/// it (each byte on the emulated serial port costs a trap under TCG); no speculative-execution
/// mitigations (a throw-away test VM; patching them in and running them is slow under TCG), no
/// crypto self-tests at boot, no check of the timer interrupt.
const CONSOLE: &str = "console=ttyS0 quiet mitigations=off cryptomgr.notests no_timer_check";

/// See [`crate::kernel_cmdline`].
pub(crate) fn kernel_cmdline(params: &BootParams<'_>) -> Result<String> {
    Ok(format!("{CONSOLE} {}", identity_words(params)?))
}

/// See [`crate::warm_cmdline`].
pub(crate) fn warm_cmdline() -> String {
    format!("{CONSOLE} init_on_free=1 mkh.warm=1")
}

/// See [`crate::warm_identity_line`].
pub(crate) fn warm_identity_line(
    params: &BootParams<'_>,
    macs: &[&str],
    unix_time: u64,
) -> Result<String> {
    let mac_ok = |m: &&str| {
        m.len() == 17
            && m.split(':')
                .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()))
    };
    if let Some(bad) = macs.iter().find(|m| !mac_ok(m)) {
        return Err(ImageError::BootParam {
            name: "macs",
            seen: shorten(bad, 40),
            problem: "expected MAC addresses like 52:54:00:12:34:56",
        });
    }
    Ok(format!(
        "{} mkh.macs={} mkh.time={unix_time}\n",
        identity_words(params)?,
        macs.join(",")
    ))
}

/// The `mkh.*` words that carry one machine's identity, checked.
fn identity_words(params: &BootParams<'_>) -> Result<String> {
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
        "mkh.hostname={} mkh.authorized_key={}",
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
    if CONSOLE.len() + 1 + line.len() >= CMDLINE_MAX {
        return Err(ImageError::BootParam {
            name: "host_key",
            seen: format!("{} bytes of command line", CONSOLE.len() + 1 + line.len()),
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
        let base = CONSOLE.split(' ').count();
        assert_eq!(words[..2], ["console=ttyS0", "quiet"]);
        let words = &words[base - 2..];
        assert_eq!(words[2], "mkh.hostname=vm-1");
        assert_eq!(
            words[3],
            format!(
                "mkh.authorized_key={}",
                base64_encode(format!("{PUBKEY}\n").as_bytes())
            )
        );
        assert_eq!(
            words[4],
            format!("mkh.host_key={}", base64_encode(HOSTKEY.as_bytes()))
        );
        assert_eq!(words.len(), 5);
    }

    #[test]
    fn a_warm_identity_is_the_same_words_and_the_time_on_one_line() {
        let params = BootParams {
            hostname: "vm-1",
            authorized_key: PUBKEY,
            host_key: Some(HOSTKEY),
        };
        let cmdline = kernel_cmdline(&params).unwrap();
        let macs = ["52:54:00:00:00:01", "52:54:00:00:00:02"];
        let line = warm_identity_line(&params, &macs, 1_796_245_784).unwrap();
        assert_eq!(
            line,
            format!(
                "{} mkh.macs=52:54:00:00:00:01,52:54:00:00:00:02 mkh.time=1796245784\n",
                cmdline.strip_prefix(&format!("{CONSOLE} ")).unwrap()
            )
        );
        assert_eq!(line.matches('\n').count(), 1);
        assert_eq!(
            warm_cmdline(),
            format!("{CONSOLE} init_on_free=1 mkh.warm=1")
        );
        let bad = BootParams {
            hostname: "a-",
            ..params
        };
        assert!(warm_identity_line(&bad, &macs, 0).is_err());
        assert!(warm_identity_line(&params, &["52:54:00:00:00:0g"], 0).is_err());
        assert!(warm_identity_line(&params, &["52:54:00:00:00:01 x"], 0).is_err());
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
