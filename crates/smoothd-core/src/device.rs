//! Device presets a task can ask for.

use serde::{Deserialize, Serialize};

/// The browser a task emulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Device {
    /// A 1280x800 laptop.
    #[default]
    #[serde(rename = "desktop")]
    Desktop,
    /// A 1920x1080 monitor.
    #[serde(rename = "desktop-lg")]
    DesktopLg,
    /// A phone: small viewport, touch, mobile user agent.
    #[serde(rename = "mobile")]
    Mobile,
}

/// What a device preset means for the browser.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Viewport {
    pub width: u32,
    pub height: u32,
    pub device_scale_factor: f64,
    pub mobile: bool,
    pub touch: bool,
}

impl Device {
    /// All accepted spellings, for error messages.
    pub const NAMES: &'static str = "desktop, desktop-lg, mobile";

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "desktop" => Device::Desktop,
            "desktop-lg" => Device::DesktopLg,
            "mobile" => Device::Mobile,
            _ => return None,
        })
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Desktop => "desktop",
            Device::DesktopLg => "desktop-lg",
            Device::Mobile => "mobile",
        }
    }

    /// The viewport this preset emulates.
    pub fn viewport(self) -> Viewport {
        match self {
            Device::Desktop => Viewport {
                width: 1280,
                height: 800,
                device_scale_factor: 1.0,
                mobile: false,
                touch: false,
            },
            Device::DesktopLg => Viewport {
                width: 1920,
                height: 1080,
                device_scale_factor: 1.0,
                mobile: false,
                touch: false,
            },
            Device::Mobile => Viewport {
                width: 390,
                height: 844,
                device_scale_factor: 3.0,
                mobile: true,
                touch: true,
            },
        }
    }
}
