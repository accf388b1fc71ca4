//! Device emulation and stealth, applied to each page before it loads anything. Nothing here
//! patches JavaScript: every value is set natively (launch flags and CDP overrides), so no
//! function or getter differs from the browser's own, and the page, its iframes and its workers
//! read the same values.
//!
//! - The browser-wide user agent (`--user-agent`, see [`launch_args`]) is the one of the
//!   device the browser is launched for (desktop, or a phone's in a browser of its own),
//!   without "Headless"; `--disable-blink-features=AutomationControlled` keeps
//!   `navigator.webdriver` false. Languages, Accept-Language, platform, hardware, timezone and
//!   WebGL stay the browser's own, which agree in every context.
//! - Every session gets its device's viewport, pixel ratio, screen and window size (screen >=
//!   window >= viewport) and touch.
//! - A mobile device overrides the client hints (and the user agent, on a browser launched
//!   for another device) on the page, and (through [`crate::contexts`]) on its iframes and
//!   dedicated, shared and service workers before they run.
//! - Without stealth the browser says it is automated the standard way: `navigator.webdriver`
//!   is true (Chromium's automation flag, in the page and its iframes). Everything else is the
//!   same, so nothing disagrees with anything.

use chromiumoxide::Page;
use chromiumoxide::cdp::browser_protocol::browser::{
    Bounds, GetWindowForTargetParams, SetWindowBoundsParams,
};
use chromiumoxide::cdp::browser_protocol::emulation::{
    SetDeviceMetricsOverrideParams, SetTouchEmulationEnabledParams, SetUserAgentOverrideParams,
    UserAgentBrandVersion, UserAgentMetadata,
};
use chromiumoxide::cdp::browser_protocol::page::AddScriptToEvaluateOnNewDocumentParams;
use smoothd_core::Device;

use crate::contexts::Overrides;
use crate::error::BrowserError;

/// The desktop user agent of a Chromium major version (what the browser says, minus "Headless").
pub fn desktop_user_agent(major: &str) -> String {
    format!(
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.0.0 Safari/537.36"
    )
}

/// The user agent a device presents, for a Chromium major version.
pub fn user_agent(device: Device, major: &str) -> String {
    match device {
        Device::Mobile => format!(
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) \
             Chrome/{major}.0.0.0 Mobile Safari/537.36"
        ),
        Device::Desktop | Device::DesktopLg => desktop_user_agent(major),
    }
}

/// The device whose user agent a browser launched for `device` carries, natively, in every
/// context: the desktop presets share one identity, a phone has its own. Browsers are shared
/// between tasks of one identity only.
pub fn identity(device: Device) -> Device {
    match device {
        Device::Desktop | Device::DesktopLg => Device::Desktop,
        Device::Mobile => Device::Mobile,
    }
}

/// Flags for a browser we launch for `device`: the browser-wide user agent of its
/// [`identity`], without "Headless". Shared and service workers take their
/// `navigator.userAgent` from it and from nothing else (no override reaches that value), so
/// it is what every context of the browser says. Asks the binary for its version once per
/// process; nothing if it does not answer.
pub async fn launch_args(chromium: &std::path::Path, device: Device) -> Vec<String> {
    match chromium_major(chromium).await {
        Some(m) => vec![format!("--user-agent={}", user_agent(identity(device), &m))],
        None => Vec::new(),
    }
}

/// The major version of the Chromium at `chromium`, asked once per process.
async fn chromium_major(chromium: &std::path::Path) -> Option<String> {
    static MAJOR: tokio::sync::OnceCell<Option<String>> = tokio::sync::OnceCell::const_new();
    MAJOR
        .get_or_init(|| async {
            let out = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                tokio::process::Command::new(chromium)
                    .arg("--version")
                    .stdin(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .output(),
            )
            .await
            .ok()?
            .ok()?;
            major_version(&String::from_utf8_lossy(&out.stdout))
        })
        .await
        .clone()
}

/// The major version in `chromium --version`'s answer ("Chromium 156.0.8078.114 built on
/// Debian...", "Google Chrome 130.0.6723.58").
fn major_version(text: &str) -> Option<String> {
    text.split_whitespace()
        .find(|w| w.split('.').count() == 4 && w.split('.').all(|p| p.parse::<u32>().is_ok()))
        .and_then(|v| v.split('.').next())
        .map(str::to_string)
}

/// Chromium's own brand list for a major version (its GREASE algorithm, as
/// components/embedder_support/user_agent_utils.cc has it): a made-up brand whose punctuation,
/// version and position follow from the major version, and "Chromium". An override that used
/// other brands would disagree with the workers no override reaches.
fn brands(major: &str, full: &str) -> (Vec<UserAgentBrandVersion>, Vec<UserAgentBrandVersion>) {
    const CHARS: [&str; 11] = [" ", "(", ":", "-", ".", "/", ")", ";", "=", "?", "_"];
    const VERSIONS: [&str; 3] = ["8", "99", "24"];
    let seed: usize = major.parse().unwrap_or(0);
    let grease = format!(
        "Not{}A{}Brand",
        CHARS[seed % CHARS.len()],
        CHARS[(seed + 1) % CHARS.len()]
    );
    let grease_version = VERSIONS[seed % VERSIONS.len()];
    let mut short = vec![
        UserAgentBrandVersion::new("Chromium", major),
        UserAgentBrandVersion::new("Chromium", major),
    ];
    let mut long = short.clone();
    short[seed % 2] = UserAgentBrandVersion::new(grease.clone(), grease_version);
    short[(seed + 1) % 2] = UserAgentBrandVersion::new("Chromium", major);
    long[seed % 2] = UserAgentBrandVersion::new(grease, format!("{grease_version}.0.0.0"));
    long[(seed + 1) % 2] = UserAgentBrandVersion::new("Chromium", full);
    (short, long)
}

fn metadata(device: Device, major: &str, full: &str) -> UserAgentMetadata {
    let (brands, full_list) = brands(major, full);
    let mobile = device == Device::Mobile;
    UserAgentMetadata {
        brands: Some(brands),
        full_version_list: Some(full_list),
        platform: if mobile { "Android".into() } else { "Linux".into() },
        platform_version: if mobile { "14.0.0".into() } else { String::new() },
        architecture: if mobile { String::new() } else { "x86".into() },
        model: if mobile { "Pixel 8".into() } else { String::new() },
        mobile,
        bitness: Some("64".into()),
        wow64: Some(false),
        form_factors: Some(vec![if mobile { "Mobile".into() } else { "Desktop".into() }]),
    }
}

/// How much taller a desktop window is than its page: Chromium's headless window keeps this
/// much of its outer height for the (invisible) toolbars, so a window this much taller than
/// the viewport shows exactly the viewport, and the screencast, live view and recording are
/// the viewport's size (measured on Chromium 156: 85 left a 798-pixel-high view).
const TOOLBAR_HEIGHT: u32 = 87;

/// The screen a device's viewport sits on, and the outer size of its browser window. A
/// desktop window has the browser's toolbars above the viewport and fits the screen; a phone's
/// window is the viewport.
pub fn screen_and_window(device: Device) -> ((u32, u32), (u32, u32)) {
    let vp = device.viewport();
    match device {
        Device::Desktop => ((1920, 1080), (vp.width, vp.height + TOOLBAR_HEIGHT)),
        Device::DesktopLg => ((2560, 1440), (vp.width, vp.height + TOOLBAR_HEIGHT)),
        Device::Mobile => ((vp.width, vp.height), (vp.width, vp.height)),
    }
}

/// A visible cursor that follows the mouse, for recordings and the live view. It ignores
/// pointer events, so it never changes what is clicked.
const CURSOR_JS: &str = r#"(() => {
  const install = () => {
    if (document.getElementById('__smoothd_cursor')) return;
    const c = document.createElement('div');
    c.id = '__smoothd_cursor';
    c.setAttribute('aria-hidden', 'true');
    c.style.cssText = 'position:fixed;left:0;top:0;width:18px;height:18px;margin:-9px 0 0 -9px;border-radius:50%;' +
      'background:rgba(255,60,60,.55);border:2px solid #fff;box-shadow:0 0 3px rgba(0,0,0,.6);' +
      'pointer-events:none;z-index:2147483647;transition:left .05s linear,top .05s linear;';
    (document.body || document.documentElement).appendChild(c);
    const move = (e) => { c.style.left = e.clientX + 'px'; c.style.top = e.clientY + 'px'; };
    window.addEventListener('mousemove', move, true);
    window.addEventListener('pointermove', move, true);
    window.addEventListener('mousedown', () => { c.style.transform = 'scale(.7)'; }, true);
    window.addEventListener('mouseup', () => { c.style.transform = ''; }, true);
  };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', install); else install();
})();"#;

/// Adds the cursor overlay to every document the page loads.
pub async fn show_cursor(page: &Page) -> Result<(), BrowserError> {
    page.execute(AddScriptToEvaluateOnNewDocumentParams {
        source: CURSOR_JS.into(),
        world_name: None,
        include_command_line_api: None,
        run_immediately: None,
    })
    .await?;
    Ok(())
}

/// Applies `device` (and stealth, or its absence) to a fresh page. Returns what the page's
/// iframes and workers must also get (see [`crate::contexts`]).
pub async fn apply(
    page: &Page,
    device: Device,
    stealth: bool,
    chrome_version: &str,
    browser_user_agent: &str,
) -> Result<Overrides, BrowserError> {
    size(page, device).await?;
    let vp = device.viewport();
    // Touch is emulated, but mouse input is not turned into touch
    // (`Emulation.setEmitTouchEventsForMouse`): with that on, a pressed mouse event sent through
    // DevTools never answers, which hung the agent's clicks and the live view's on phones. The
    // agent taps instead (driver/act.rs).
    page.execute(SetTouchEmulationEnabledParams {
        enabled: vp.touch,
        max_touch_points: vp.touch.then_some(5),
    })
    .await?;
    let Some(params) = user_agent_override(device, chrome_version, browser_user_agent) else {
        return Ok(Overrides {
            user_agent: None,
            automation: !stealth,
        });
    };
    let children = serde_json::to_value(&params).map_err(|e| BrowserError::Cdp(e.to_string()))?;
    page.execute(params).await?;
    Ok(Overrides {
        user_agent: Some(children),
        automation: !stealth,
    })
}

/// Gives `page` the viewport, screen and window of `device` (all that tells `desktop` from
/// `desktop-lg`).
pub async fn size(page: &Page, device: Device) -> Result<(), BrowserError> {
    let vp = device.viewport();
    let ((screen_w, screen_h), (outer_w, outer_h)) = screen_and_window(device);
    let mut metrics = SetDeviceMetricsOverrideParams::new(
        i64::from(vp.width),
        i64::from(vp.height),
        vp.device_scale_factor,
        vp.mobile,
    );
    metrics.screen_width = Some(i64::from(screen_w));
    metrics.screen_height = Some(i64::from(screen_h));
    page.execute(metrics).await?;
    // The window's outer size: the emulated viewport does not change it, and headless
    // windows start at 780x580, smaller than the viewport. A browser we do not own may refuse.
    if let Ok(win) = page
        .execute(
            GetWindowForTargetParams::builder()
                .target_id(page.target_id().clone())
                .build(),
        )
        .await
    {
        let bounds = Bounds {
            width: Some(i64::from(outer_w)),
            height: Some(i64::from(outer_h)),
            ..Default::default()
        };
        if let Err(e) = page
            .execute(SetWindowBoundsParams::new(win.result.window_id, bounds))
            .await
        {
            tracing::debug!(error = %e, "cannot size the browser window");
        }
    }
    Ok(())
}

/// The user agent and client hints override `device` needs on a browser whose own user agent
/// is `browser_user_agent` (Chromium `chrome_version`), or None when the browser already says
/// it natively: a desktop device on a browser launched with [`launch_args`]. A phone always
/// needs one, even on a browser launched for it: the `--user-agent` flag changes the string,
/// never the client hints (`navigator.userAgentData`, `Sec-CH-UA-*`), which stay desktop Linux.
pub fn user_agent_override(
    device: Device,
    chrome_version: &str,
    browser_user_agent: &str,
) -> Option<SetUserAgentOverrideParams> {
    let major = chrome_version.split('.').next().unwrap_or("130");
    let ua = user_agent(device, major);
    if ua == browser_user_agent && !device.viewport().mobile {
        return None;
    }
    let mut params = SetUserAgentOverrideParams::new(ua);
    params.user_agent_metadata = Some(metadata(device, major, chrome_version));
    Some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brands_follow_chromium_grease() {
        // What Chromium 156 itself reports in navigator.userAgentData.brands.
        let (short, long) = brands("156", "156.0.8078.114");
        let names: Vec<_> = short
            .iter()
            .map(|b| format!("{}/{}", b.brand, b.version))
            .collect();
        assert_eq!(names, ["Not:A-Brand/8", "Chromium/156"]);
        assert_eq!(long[1].version, "156.0.8078.114");
        assert_eq!(long[0].version, "8.0.0.0");
        let (short, _) = brands("131", "131.0.0.0");
        assert_eq!(short[1].brand, "Not_A Brand");
        assert_eq!(short[1].version, "24");
    }

    #[test]
    fn only_a_phone_or_another_browser_needs_a_user_agent_override() {
        let version = "156.0.8078.114";
        let desktop = user_agent(identity(Device::DesktopLg), "156");
        assert_eq!(identity(Device::DesktopLg), Device::Desktop);
        assert!(user_agent_override(Device::Desktop, version, &desktop).is_none());
        assert!(user_agent_override(Device::DesktopLg, version, &desktop).is_none());
        // A browser launched without the flag says "HeadlessChrome": overridden.
        let headless = desktop.replace("Chrome/", "HeadlessChrome/");
        let over = user_agent_override(Device::Desktop, version, &headless).map(|p| p.user_agent);
        assert_eq!(over.as_deref(), Some(desktop.as_str()));
        // A phone's browser already says the phone's user agent; its client hints still need it.
        let phone = user_agent(identity(Device::Mobile), "156");
        let over = user_agent_override(Device::Mobile, version, &phone).and_then(|p| p.user_agent_metadata);
        let meta = over.map(|m| (m.platform, m.mobile));
        assert_eq!(meta, Some(("Android".to_string(), true)));
    }

    #[test]
    fn major_version_from_version_output() {
        let debian = "Chromium 156.0.8078.114 built on Debian GNU/Linux 12 (bookworm)\n";
        assert_eq!(major_version(debian).as_deref(), Some("156"));
        assert_eq!(
            major_version("Google Chrome 130.0.6723.58 ").as_deref(),
            Some("130")
        );
        assert_eq!(major_version("not a browser"), None);
    }

    #[test]
    fn screens_hold_their_windows_and_windows_their_viewports() {
        for d in [Device::Desktop, Device::DesktopLg, Device::Mobile] {
            let vp = d.viewport();
            let ((sw, sh), (ow, oh)) = screen_and_window(d);
            assert!(sw >= ow && sh >= oh && ow >= vp.width && oh >= vp.height, "{d:?}");
        }
    }
}
