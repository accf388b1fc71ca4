//! Which Chromium runs and with what around it: the binary (Debian's `/usr/bin/chromium`
//! launcher script is skipped for the binary it runs, so flags, extensions and environment are
//! only ours), the environment variables a browser inherits, and util-linux's `setpriv`, which
//! ties the browser's life to ours.

use std::path::PathBuf;
use std::process::Stdio;

use crate::error::BrowserError;

/// Looks for Chromium: the configured path, then the usual names on `PATH`. Debian's
/// `/usr/bin/chromium` is a shell script that sources `/etc/chromium.d/*` (which loads uBlock
/// Origin, adds flags of its own and exports Google API keys) before it runs the real binary;
/// that script is skipped for the binary it runs, so the command line is only ours.
pub fn find_chromium(configured: Option<&str>) -> Result<PathBuf, BrowserError> {
    if let Some(p) = configured {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(behind_wrapper(p))
        } else {
            Err(BrowserError::Launch(format!(
                "SMOOTHD_CHROMIUM points at {}, which does not exist",
                p.display()
            )))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(behind_wrapper(candidate));
            }
        }
    }
    Err(BrowserError::Launch(
        "no Chromium found on PATH; install Debian's `chromium` package or set SMOOTHD_CHROMIUM".into(),
    ))
}

/// The real binary behind Debian's launcher script (`/usr/lib/chromium/chromium`), or `path`
/// itself when it is not that script (a binary, or a wrapper of the user's own).
fn behind_wrapper(path: PathBuf) -> PathBuf {
    let Ok(head) = std::fs::read(&path).map(|b| b.into_iter().take(64 * 1024).collect::<Vec<u8>>()) else {
        return path;
    };
    let text = String::from_utf8_lossy(&head);
    if !text.starts_with("#!") || !text.contains("/etc/chromium.d") {
        return path;
    }
    let real = PathBuf::from("/usr/lib/chromium/chromium");
    if real.is_file() {
        tracing::debug!(wrapper = %path.display(), binary = %real.display(), "skipping Debian's chromium launcher script");
        real
    } else {
        path
    }
}

/// Environment variables a browser inherits from smoothd; everything else (Google API keys,
/// `CHROME_*`, proxies of the server's own) stays out, and `HOME` is the browser's own folder.
pub(crate) const KEPT_ENV: &[&str] = &[
    "PATH",
    "TMPDIR",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "TZ",
    "FONTCONFIG_FILE",
    "FONTCONFIG_PATH",
];

/// util-linux's `setpriv`, when it is installed and knows `--pdeathsig` (util-linux 2.33+).
pub(crate) fn setpriv() -> Option<&'static std::path::Path> {
    static FOUND: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    FOUND
        .get_or_init(|| {
            ["/usr/bin/setpriv", "/bin/setpriv"]
                .iter()
                .map(PathBuf::from)
                .find(|p| {
                    std::process::Command::new(p)
                        .args(["--pdeathsig", "KILL", "--", "true"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success())
                })
        })
        .as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debians_launcher_is_skipped_and_other_binaries_are_kept() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let own = dir.path().join("my-chromium");
        std::fs::write(&own, "#!/bin/sh\nexec /opt/chromium/chrome \"$@\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let given = own.to_str().unwrap_or_default();
        assert_eq!(find_chromium(Some(given)).ok(), Some(own.clone()));
        let debian = PathBuf::from("/usr/bin/chromium");
        let real = PathBuf::from("/usr/lib/chromium/chromium");
        if debian.is_file() && real.is_file() {
            assert_eq!(find_chromium(Some("/usr/bin/chromium")).ok(), Some(real.clone()));
            assert_eq!(behind_wrapper(real.clone()), real);
        }
        assert!(find_chromium(Some("/nonexistent/chromium")).is_err());
    }
}
