//! Certificates, made with the `openssl` command: minikube's CA (`$MINIKUBE_HOME/ca.crt`,
//! `ca.key`, CN minikubeCA, shared by all profiles of a home), the API server's serving
//! certificate, the admin client certificate (CN minikube-user, O system:masters) and the
//! service-account key pair, all per profile.

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::lock;
use crate::paths::{Env, Profile};
use crate::Failure;

/// DNS names in the API server's certificate (minikube's list).
pub const APISERVER_DNS: &[&str] = &[
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "control-plane.minikube.internal",
    "minikube",
];
/// The `kubernetes` Service's ClusterIP: the first address of 10.96.0.0/12.
pub const SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

fn openssl(args: &[&str], dir: &Path) -> Result<(), Failure> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Failure::error(format!("run openssl (install openssl): {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Failure::error(format!(
            "openssl {}: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn p(path: &Path) -> &str {
    path.to_str().expect("paths of the stand-in are UTF-8")
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Failure {
    Failure::error(format!("{what} {}: {e}", path.display()))
}

fn write(path: &Path, text: &str) -> Result<(), Failure> {
    fs::write(path, text).map_err(|e| io("write", path, e))
}

/// An RSA 2048 key, as minikube makes its keys.
fn new_key(path: &Path, dir: &Path) -> Result<(), Failure> {
    openssl(&["genrsa", "-out", p(path), "2048"], dir)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|e| io("chmod", path, e))
}

/// A P-256 key, for the TLS the node itself serves and uses (the API server's serving key, the
/// node components' client keys; minikube's are RSA 2048, a listed deviation): an ECDSA
/// signature costs a fraction of an RSA one, and under emulation the RSA signatures of a
/// control plane's handshakes alone kept its API server from answering within Go's 10 s TLS
/// handshake timeout.
fn new_ec_key(path: &Path, dir: &Path) -> Result<(), Failure> {
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            p(path),
        ],
        dir,
    )?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|e| io("chmod", path, e))
}

/// `-set_serial` value: random, positive.
fn serial() -> String {
    let n: u64 = rand::random::<u64>() >> 1;
    format!("0x{n:x}")
}

const REQ_CONFIG: &str = "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\n";

/// Creates the CA unless it exists (under a lock: parallel starts in one home share it).
pub fn ensure_ca(env: &Env) -> Result<(), Failure> {
    let (crt, key) = (env.ca_cert(), env.ca_key());
    if crt.exists() && key.exists() {
        return Ok(());
    }
    fs::create_dir_all(&env.home).map_err(|e| io("create", &env.home, e))?;
    let _guard = lock::exclusive(&env.lock_dir, &format!("ca-{}", lock::key(&env.home)))?;
    if crt.exists() && key.exists() {
        return Ok(());
    }
    let work = TempDir::new(&env.home)?;
    let cfg = work.0.join("ca.cnf");
    write(
        &cfg,
        &format!(
            "{REQ_CONFIG}CN = minikubeCA\n[v3_ca]\nbasicConstraints = critical, CA:TRUE\n\
             keyUsage = critical, digitalSignature, keyEncipherment, keyCertSign\n\
             subjectKeyIdentifier = hash\n"
        ),
    )?;
    let tmp_key = work.0.join("ca.key");
    let tmp_crt = work.0.join("ca.crt");
    new_key(&tmp_key, &work.0)?;
    openssl(
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            p(&tmp_key),
            "-config",
            p(&cfg),
            "-extensions",
            "v3_ca",
            "-days",
            "3650",
            "-sha256",
            "-set_serial",
            &serial(),
            "-out",
            p(&tmp_crt),
        ],
        &work.0,
    )?;
    fs::rename(&tmp_key, &key).map_err(|e| io("move into place", &key, e))?;
    fs::rename(&tmp_crt, &crt).map_err(|e| io("move into place", &crt, e))
}

/// Signs a certificate for `key` (created if missing) with the CA.
fn sign(
    env: &Env,
    dir: &Path,
    key: &Path,
    crt: &Path,
    subject: &[(&str, &str)],
    extensions: &str,
) -> Result<(), Failure> {
    if !key.exists() {
        new_key(key, dir)?;
    }
    let work = TempDir::new(dir)?;
    let mut cfg = String::from(REQ_CONFIG);
    for (k, v) in subject {
        cfg.push_str(&format!("{k} = {v}\n"));
    }
    cfg.push_str("[ext]\n");
    cfg.push_str(extensions);
    let cfg_path = work.0.join("req.cnf");
    write(&cfg_path, &cfg)?;
    let csr = work.0.join("req.csr");
    let tmp_crt = work.0.join("out.crt");
    openssl(
        &[
            "req",
            "-new",
            "-key",
            p(key),
            "-config",
            p(&cfg_path),
            "-out",
            p(&csr),
        ],
        dir,
    )?;
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            p(&csr),
            "-CA",
            p(&env.ca_cert()),
            "-CAkey",
            p(&env.ca_key()),
            "-set_serial",
            &serial(),
            "-days",
            "1095",
            "-sha256",
            "-extfile",
            p(&cfg_path),
            "-extensions",
            "ext",
            "-out",
            p(&tmp_crt),
        ],
        dir,
    )?;
    fs::rename(&tmp_crt, crt).map_err(|e| io("move into place", crt, e))
}

/// The admin client certificate, unless it exists.
pub fn ensure_client(env: &Env, profile: &Profile) -> Result<(), Failure> {
    let (crt, key) = (profile.client_cert(), profile.client_key());
    if crt.exists() && key.exists() {
        return Ok(());
    }
    sign(
        env,
        &profile.dir(),
        &key,
        &crt,
        &[("O", "system:masters"), ("CN", "minikube-user")],
        "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature, keyEncipherment\nextendedKeyUsage = clientAuth\n",
    )
}

/// A client certificate `<dir>/<name>.crt` (key `<name>.key`, kept if it exists) for the user
/// `cn` in group `o` (none when empty), signed by the CA: the node's components authenticate so
/// (kubeadm's `kubelet.conf`, `controller-manager.conf`, ...).
pub fn write_client(env: &Env, dir: &Path, name: &str, cn: &str, o: &str) -> Result<(), Failure> {
    let key = dir.join(format!("{name}.key"));
    if !key.exists() {
        new_ec_key(&key, dir)?;
    }
    let mut subject = Vec::new();
    if !o.is_empty() {
        subject.push(("O", o));
    }
    subject.push(("CN", cn));
    sign(
        env,
        dir,
        &dir.join(format!("{name}.key")),
        &dir.join(format!("{name}.crt")),
        &subject,
        "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature, keyEncipherment\nextendedKeyUsage = clientAuth\n",
    )
}

/// The API server's serving certificate for these addresses; rewritten on every start (the VM's
/// address may have changed), keeping its key.
pub fn write_apiserver(env: &Env, profile: &Profile, ips: &[Ipv4Addr]) -> Result<(), Failure> {
    let mut san: Vec<String> = APISERVER_DNS.iter().map(|d| format!("DNS:{d}")).collect();
    let mut seen = Vec::new();
    for ip in ips {
        if !seen.contains(ip) {
            seen.push(*ip);
            san.push(format!("IP:{ip}"));
        }
    }
    sign(
        env,
        &profile.dir(),
        &profile.apiserver_key(),
        &profile.apiserver_cert(),
        &[("O", "system:masters"), ("CN", "minikube")],
        &format!(
            "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature, keyEncipherment\nextendedKeyUsage = serverAuth, clientAuth\nsubjectAltName = {}\n",
            san.join(", ")
        ),
    )?;
    openssl(
        &[
            "pkey",
            "-in",
            p(&profile.apiserver_key()),
            "-pubout",
            "-out",
            p(&profile.apiserver_pub()),
        ],
        &profile.dir(),
    )
}

/// The API server's serving key, unless it exists (its certificate needs the VM's address,
/// known later: see [`write_apiserver`]).
pub fn ensure_apiserver_key(profile: &Profile) -> Result<(), Failure> {
    let key = profile.apiserver_key();
    if key.exists() {
        return Ok(());
    }
    new_ec_key(&key, &profile.dir())
}

/// The service-account signing key pair, unless it exists.
pub fn ensure_service_account(profile: &Profile) -> Result<(), Failure> {
    let (key, public) = (profile.sa_key(), profile.sa_pub());
    if key.exists() && public.exists() {
        return Ok(());
    }
    let dir = profile.dir();
    new_key(&key, &dir)?;
    openssl(
        &["rsa", "-in", p(&key), "-pubout", "-out", p(&public)],
        &dir,
    )
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(parent: &Path) -> Result<TempDir, Failure> {
        let dir = parent.join(format!(
            ".certs-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
