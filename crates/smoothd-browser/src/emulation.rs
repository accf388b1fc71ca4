//! Device emulation and stealth, applied to each page before it loads anything: viewport,
//! device scale factor, touch, user agent and client hints that match the device and never say
//! "Headless", and a script that makes the usual automation checks read like a normal browser.

use chromiumoxide::Page;
use chromiumoxide::cdp::browser_protocol::emulation::{
    SetDeviceMetricsOverrideParams, SetEmitTouchEventsForMouseParams, SetTouchEmulationEnabledParams,
    SetUserAgentOverrideParams, UserAgentBrandVersion, UserAgentMetadata,
};
use chromiumoxide::cdp::browser_protocol::page::AddScriptToEvaluateOnNewDocumentParams;
use smoothd_core::Device;

use crate::error::BrowserError;

/// The user agent a device presents, for a Chromium major version.
pub fn user_agent(device: Device, major: &str) -> String {
    match device {
        Device::Mobile => format!(
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) \
             Chrome/{major}.0.0.0 Mobile Safari/537.36"
        ),
        Device::Desktop | Device::DesktopLg => format!(
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.0.0 Safari/537.36"
        ),
    }
}

fn metadata(device: Device, major: &str, full: &str) -> UserAgentMetadata {
    let brands = vec![
        UserAgentBrandVersion::new("Chromium", major),
        UserAgentBrandVersion::new("Not_A Brand", "24"),
    ];
    let full_list = vec![
        UserAgentBrandVersion::new("Chromium", full),
        UserAgentBrandVersion::new("Not_A Brand", "24.0.0.0"),
    ];
    let mobile = device == Device::Mobile;
    UserAgentMetadata {
        brands: Some(brands),
        full_version_list: Some(full_list),
        platform: if mobile { "Android".into() } else { "Linux".into() },
        platform_version: if mobile { "14.0.0".into() } else { "6.1.0".into() },
        architecture: if mobile { String::new() } else { "x86".into() },
        model: if mobile { "Pixel 8".into() } else { String::new() },
        mobile,
        bitness: Some("64".into()),
        wow64: Some(false),
        form_factors: None,
    }
}

/// Patches the usual automation tells. Runs before any page script in every frame.
const STEALTH_JS: &str = r#"(() => {
  const define = (obj, prop, get) => {
    try { Object.defineProperty(obj, prop, { get, configurable: true, enumerable: true }); } catch (e) {}
  };
  const navProto = Object.getPrototypeOf(navigator);
  define(navProto, 'webdriver', () => false);
  if (!navigator.languages || navigator.languages.length === 0) {
    define(navProto, 'languages', () => ['en-US', 'en']);
  }
  // Headless windows are smaller than the emulated viewport; a real window never is.
  if (window.outerWidth < window.innerWidth || window.outerHeight < window.innerHeight) {
    define(window, 'outerWidth', () => window.innerWidth);
    define(window, 'outerHeight', () => window.innerHeight + 85);
  }
  if (!window.chrome) {
    Object.defineProperty(window, 'chrome', {
      value: { app: { isInstalled: false }, runtime: {}, csi() {}, loadTimes() {} },
      configurable: true, writable: true,
    });
  }
  const patchGl = (proto) => {
    if (!proto) return;
    const original = proto.getParameter;
    proto.getParameter = function (p) {
      if (p === 37445) return 'Google Inc. (Intel)';
      if (p === 37446) return 'ANGLE (Intel, Mesa Intel(R) UHD Graphics 630 (CFL GT2), OpenGL 4.6)';
      return original.call(this, p);
    };
  };
  patchGl(window.WebGLRenderingContext && WebGLRenderingContext.prototype);
  patchGl(window.WebGL2RenderingContext && WebGL2RenderingContext.prototype);
  if (navigator.permissions && navigator.permissions.query) {
    const query = navigator.permissions.query.bind(navigator.permissions);
    navigator.permissions.query = (p) =>
      p && p.name === 'notifications' ? Promise.resolve({ state: Notification.permission }) : query(p);
  }
})();"#;

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

/// Applies `device` (and stealth, if asked) to a fresh page.
pub async fn apply(
    page: &Page,
    device: Device,
    stealth: bool,
    chrome_version: &str,
) -> Result<(), BrowserError> {
    let vp = device.viewport();
    let major = chrome_version.split('.').next().unwrap_or("130");
    page.execute(SetDeviceMetricsOverrideParams::new(
        i64::from(vp.width),
        i64::from(vp.height),
        vp.device_scale_factor,
        vp.mobile,
    ))
    .await?;
    page.execute(SetTouchEmulationEnabledParams {
        enabled: vp.touch,
        max_touch_points: vp.touch.then_some(5),
    })
    .await?;
    if vp.touch {
        page.execute(SetEmitTouchEventsForMouseParams {
            enabled: true,
            configuration: None,
        })
        .await?;
    }
    // Always override the user agent: the default one says "HeadlessChrome".
    let mut ua = SetUserAgentOverrideParams::new(user_agent(device, major));
    ua.accept_language = Some("en-US,en;q=0.9".into());
    ua.platform = Some(if vp.mobile {
        "Linux armv81".into()
    } else {
        "Linux x86_64".into()
    });
    ua.user_agent_metadata = Some(metadata(device, major, chrome_version));
    page.execute(ua).await?;
    if stealth {
        page.execute(AddScriptToEvaluateOnNewDocumentParams {
            source: STEALTH_JS.into(),
            world_name: None,
            include_command_line_api: None,
            run_immediately: None,
        })
        .await?;
    }
    Ok(())
}
