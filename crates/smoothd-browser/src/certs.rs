//! A task's client certificates. Chromium on Linux reads client certificates from the NSS
//! database in `$HOME/.pki/nssdb` of its process, so a task with certificates gets a browser
//! of its own whose `HOME` is a fresh folder holding a database with only that task's
//! certificates (imported with `certutil`/`pk12util` from Debian's `libnss3-tools`); the folder
//! goes with the process. Its profile selects a certificate automatically for every site that
//! asks (the `auto_select_certificate` content setting in the profile's `Preferences`, the
//! per-profile form of the `AutoSelectCertificateForUrls` policy); without that, headless
//! Chromium waits on a certificate picker nobody can see.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::error::BrowserError;

/// One certificate as the task sent it, decoded.
#[derive(Clone)]
pub struct ClientCertificate {
    /// The PKCS#12 (.p12) file.
    pub p12: Vec<u8>,
    /// Its password (empty when none).
    pub password: String,
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("bytes", &self.p12.len())
            .finish_non_exhaustive()
    }
}

/// An NSS tool on `PATH` (or in `/usr/bin`).
fn tool(name: &str) -> Result<PathBuf, BrowserError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            BrowserError::Unsupported(format!(
                "client certificates need NSS's {name}, which is not installed (Debian: apt-get install libnss3-tools)"
            ))
        })
}

/// Runs an NSS tool; its output names what went wrong.
async fn run(tool: &Path, args: &[&std::ffi::OsStr]) -> Result<(), String> {
    let out = tokio::process::Command::new(tool)
        .args(args)
        .env_clear()
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", tool.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    Err(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; "))
}

/// A fresh `HOME` whose NSS database holds `certs` (with their private keys). A certificate
/// that cannot be imported (a wrong password, not a .p12) is an error naming its index.
pub async fn nss_home(certs: &[ClientCertificate]) -> Result<tempfile::TempDir, BrowserError> {
    let certutil = tool("certutil")?;
    let pk12util = tool("pk12util")?;
    let home = tempfile::Builder::new()
        .prefix("smoothd-home-")
        .tempdir()
        .map_err(|e| BrowserError::Launch(format!("cannot create a home folder: {e}")))?;
    let db = home.path().join(".pki").join("nssdb");
    std::fs::create_dir_all(&db)
        .map_err(|e| BrowserError::Launch(format!("cannot create the certificate database: {e}")))?;
    let db_arg = format!("sql:{}", db.display());
    run(
        &certutil,
        &[
            "-N".as_ref(),
            "-d".as_ref(),
            db_arg.as_ref(),
            "--empty-password".as_ref(),
        ],
    )
    .await
    .map_err(|e| BrowserError::Launch(format!("cannot create the certificate database: {e}")))?;
    // The files pk12util reads live only while it runs (mode 0600, in the private folder).
    let scratch = tempfile::Builder::new()
        .prefix("smoothd-p12-")
        .tempdir()
        .map_err(|e| BrowserError::Launch(format!("cannot create a folder: {e}")))?;
    for (i, cert) in certs.iter().enumerate() {
        let file = scratch.path().join(format!("{i}.p12"));
        let pass = scratch.path().join(format!("{i}.pass"));
        write_private(&file, &cert.p12)?;
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "-i".as_ref(),
            file.as_os_str(),
            "-d".as_ref(),
            db_arg.as_ref(),
            "-K".as_ref(),
            "".as_ref(),
        ];
        // A password goes in a file (not on a command line others can read); pk12util reads
        // an empty file as an error, so no password is given as `-W ""`.
        if cert.password.is_empty() {
            args.extend::<[&std::ffi::OsStr; 2]>(["-W".as_ref(), "".as_ref()]);
        } else {
            write_private(&pass, cert.password.as_bytes())?;
            args.extend::<[&std::ffi::OsStr; 2]>(["-w".as_ref(), pass.as_os_str()]);
        }
        let result = run(&pk12util, &args).await;
        let _ = std::fs::remove_file(&file);
        let _ = std::fs::remove_file(&pass);
        result.map_err(|e| {
            BrowserError::Navigation(format!(
                "certificates[{i}]: cannot import the .p12 file (wrong password, or not PKCS#12): {e}"
            ))
        })?;
    }
    Ok(home)
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), BrowserError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| BrowserError::Launch(format!("cannot write {}: {e}", path.display())))?;
    f.write_all(bytes)
        .map_err(|e| BrowserError::Launch(format!("cannot write {}: {e}", path.display())))
}

/// Makes the profile in `data_dir` present a client certificate, without asking, to every
/// site that requests one (the browser's database holds only the task's certificates; NSS
/// picks the one the site's accepted issuers match). Keeps the rest of a restored profile's
/// `Preferences`.
pub fn auto_select_certificates(data_dir: &Path) -> Result<(), BrowserError> {
    let dir = data_dir.join("Default");
    std::fs::create_dir_all(&dir)
        .map_err(|e| BrowserError::Launch(format!("cannot prepare the profile: {e}")))?;
    let path = dir.join("Preferences");
    let mut prefs: Value = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    let mut node = &mut prefs;
    for key in [
        "profile",
        "content_settings",
        "exceptions",
        "auto_select_certificate",
    ] {
        if !node.get(key).is_some_and(Value::is_object) {
            node[key] = json!({});
        }
        node = &mut node[key];
    }
    // Any primary and secondary origin; an empty filter matches every certificate.
    node["*,*"] = json!({"setting": {"filters": [{}]}});
    let bytes = serde_json::to_vec(&prefs).map_err(|e| BrowserError::Launch(e.to_string()))?;
    std::fs::write(&path, bytes)
        .map_err(|e| BrowserError::Launch(format!("cannot write the profile's preferences: {e}")))
}
