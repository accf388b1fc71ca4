//! Loading and checking settings from the environment, as figment::Jail sets it.

#![expect(
    clippy::result_large_err,
    reason = "figment::Jail's closures return figment::Error"
)]
use super::*;

#[test]
fn debug_shows_every_setting_and_no_secret() {
    let s = Settings {
        api_key: Some(Secret::from("secret-api-key-1".to_string())),
        llm_api_key: Some(Secret::from("secret-llm-key-2".to_string())),
        s3_secret_access_key: Some(Secret::from("secret-s3-key-3".to_string())),
        database_url: Some(CredentialUrl::from("postgres://u:secret-db-4@db/x".to_string())),
        browser_ws: Some(CredentialUrl::from(
            "ws://fleet:3000/devtools?token=secret-ws-5".to_string(),
        )),
        ..Settings::default()
    };
    let shown = format!("{s:?}");
    // Every field, as serialisation (derived, so never out of date) names them.
    let fields: std::collections::BTreeMap<String, figment::value::Value> =
        Figment::from(Serialized::defaults(&s)).extract().unwrap();
    assert!(fields.len() > 55, "{} fields: {fields:?}", fields.len());
    for name in fields.keys() {
        assert!(
            shown.contains(&format!(" {name}: ")),
            "{name} is missing from Debug: {shown}"
        );
    }
    assert!(!shown.contains("secret-"), "{shown}");
    assert!(shown.contains("fleet:3000") && shown.contains("@db/x"), "{shown}");
}

#[test]
fn key_names_the_environment_variable() {
    assert_eq!(key("llm_max_tokens"), "llm_max_tokens (SMOOTHD_LLM_MAX_TOKENS)");
}

#[test]
fn model_settings_from_the_environment() {
    figment::Jail::expect_with(|jail| {
        // The test command itself runs with SMOOTHD_TEST_* variables set.
        jail.clear_env();
        jail.set_env("SMOOTHD_LLM_BASE_URL", "http://127.0.0.1:9/v1");
        jail.set_env("SMOOTHD_LLM_MODEL", "m1");
        jail.set_env("SMOOTHD_LLM_PRICES", "{m1={input=2.5,output=10}}");
        jail.set_env("SMOOTHD_LLM_VISION", "off");
        let s = Settings::load(None).map_err(|e| e.to_string())?;
        assert_eq!(
            s.llm_prices["m1"],
            smoothd_agent::Price {
                input: 2.5,
                output: 10.0
            }
        );
        assert_eq!(s.vision().map_err(|e| e.to_string())?, smoothd_agent::Vision::Off);
        assert!(s.agent().map_err(|e| e.to_string())?.is_some());
        jail.set_env("SMOOTHD_LLM_VISION", "sometimes");
        let err = Settings::load(None).unwrap_err().to_string();
        assert!(err.contains("llm_vision (SMOOTHD_LLM_VISION)"), "{err}");
        Ok(())
    });
}

#[test]
fn guardrail_settings_from_the_environment() {
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("SMOOTHD_LLM_BASE_URL", "http://127.0.0.1:9/v1");
        jail.set_env("SMOOTHD_LLM_MODEL", "m1");
        let s = Settings::load(None).map_err(|e| e.to_string())?;
        let agent = s.agent().map_err(|e| e.to_string())?.ok_or("no agent")?;
        assert_eq!(agent.config.guard, smoothd_agent::GuardConfig::default());
        assert_eq!(agent.config.max_cost_usd, None);
        jail.set_env("SMOOTHD_AGENT_LOOP_REPEATS", "0");
        jail.set_env("SMOOTHD_AGENT_STALL_STEPS", "8");
        jail.set_env("SMOOTHD_AGENT_LOOP_GRACE", "1");
        jail.set_env("SMOOTHD_AGENT_LOOP_ALTERNATION", "2");
        let err = Settings::load(None).unwrap_err().to_string();
        assert!(
            err.contains("agent_loop_alternation (SMOOTHD_AGENT_LOOP_ALTERNATION)"),
            "{err}"
        );
        jail.set_env("SMOOTHD_AGENT_LOOP_ALTERNATION", "6");
        jail.set_env("SMOOTHD_MAX_COST_USD", "0.5");
        let err = Settings::load(None).unwrap_err().to_string();
        assert!(
            err.contains("max_cost_usd (SMOOTHD_MAX_COST_USD)") && err.contains("no price for \"m1\""),
            "{err}"
        );
        jail.set_env("SMOOTHD_LLM_PRICES", "{m1={input=1,output=2}}");
        let s = Settings::load(None).map_err(|e| e.to_string())?;
        let agent = s.agent().map_err(|e| e.to_string())?.ok_or("no agent")?;
        let want = smoothd_agent::GuardConfig {
            repeats: 0,
            alternation: 6,
            stall_steps: 8,
            grace: 1,
        };
        assert_eq!(agent.config.guard, want);
        assert_eq!(agent.config.max_cost_usd, Some(0.5));
        jail.set_env("SMOOTHD_MAX_COST_USD", "-1");
        let err = Settings::load(None).unwrap_err().to_string();
        assert!(err.contains("max_cost_usd (SMOOTHD_MAX_COST_USD)"), "{err}");
        Ok(())
    });
}

#[test]
fn db_acquire_timeout_and_lite_model_from_the_environment() {
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        let s = Settings::load(None).map_err(|e| e.to_string())?;
        assert_eq!(
            s.db_acquire_timeout_seconds, 3,
            "short enough for a client's retry"
        );
        jail.set_env("SMOOTHD_DB_ACQUIRE_TIMEOUT_SECONDS", "1");
        let s = Settings::load(None).map_err(|e| e.to_string())?;
        assert_eq!(s.db_acquire_timeout_seconds, 1);
        jail.set_env("SMOOTHD_DB_ACQUIRE_TIMEOUT_SECONDS", "0");
        let err = Settings::load(None).unwrap_err().to_string();
        assert!(
            err.contains("db_acquire_timeout_seconds (SMOOTHD_DB_ACQUIRE_TIMEOUT_SECONDS)"),
            "{err}"
        );
        jail.set_env("SMOOTHD_DB_ACQUIRE_TIMEOUT_SECONDS", "3");
        jail.set_env("SMOOTHD_LLM_LITE_MODEL", "small");
        let err = Settings::load(None).unwrap_err().to_string();
        assert!(err.contains("llm_lite_model (SMOOTHD_LLM_LITE_MODEL)"), "{err}");
        jail.set_env("SMOOTHD_LLM_BASE_URL", "http://127.0.0.1:11434/v1");
        jail.set_env("SMOOTHD_LLM_MODEL", "big");
        let s = Settings::load(None).map_err(|e| e.to_string())?;
        let agent = s.agent().map_err(|e| e.to_string())?.ok_or("no agent")?;
        assert_eq!(agent.lite_model.as_deref(), Some("small"));
        assert_eq!(agent.for_task("smooth-lite").llm.model(), "small");
        Ok(())
    });
}

#[test]
fn empty_key_and_model_settings_count_as_unset() {
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        for k in [
            "SMOOTHD_API_KEY",
            "SMOOTHD_LLM_BASE_URL",
            "SMOOTHD_LLM_API_KEY",
            "SMOOTHD_LLM_MODEL",
        ] {
            jail.set_env(k, "");
        }
        let s = Settings::load(None).map_err(|e| e.to_string())?;
        assert_eq!(s.api_key, None);
        assert_eq!((s.llm_base_url, s.llm_api_key, s.llm_model), (None, None, None));
        jail.set_env("SMOOTHD_LLM_BASE_URL", "http://host.docker.internal:11434/v1");
        let err = Settings::load(None).unwrap_err().to_string();
        assert!(err.contains("go together"), "{err}");
        Ok(())
    });
}

#[test]
fn metrics_settings_from_the_environment() {
    figment::Jail::expect_with(|jail| {
        // The test command itself runs with SMOOTHD_TEST_* variables set.
        jail.clear_env();
        let s = Settings::load(None).map_err(|e| e.to_string())?;
        assert!(!s.metrics_public, "the scrape needs a key unless asked otherwise");
        jail.set_env("SMOOTHD_METRICS_PUBLIC", "true");
        jail.set_env("SMOOTHD_METRICS_LISTEN", "127.0.0.1:9091");
        let s = Settings::load(None).map_err(|e| e.to_string())?;
        assert!(s.metrics_public);
        assert_eq!(s.metrics_listen.as_deref(), Some("127.0.0.1:9091"));
        jail.set_env("SMOOTHD_METRICS_LISTEN", "port 9091");
        let err = Settings::load(None).unwrap_err().to_string();
        assert!(err.contains("metrics_listen (SMOOTHD_METRICS_LISTEN)"), "{err}");
        Ok(())
    });
}

#[test]
fn s3_settings_from_the_environment() {
    figment::Jail::expect_with(|jail| {
        // The test command itself runs with SMOOTHD_TEST_* variables set.
        jail.clear_env();
        let s = Settings::load(None).map_err(|e| e.to_string())?;
        assert!(
            s.s3().is_none(),
            "artifacts stay in the data folder unless a bucket is set"
        );
        jail.set_env("SMOOTHD_S3_BUCKET", "smoothd-artifacts");
        jail.set_env("SMOOTHD_S3_ENDPOINT", "http://127.0.0.1:9000");
        jail.set_env("SMOOTHD_S3_REGION", "eu-west-1");
        jail.set_env("SMOOTHD_S3_ACCESS_KEY_ID", "AKIDEXAMPLE");
        jail.set_env("SMOOTHD_S3_SECRET_ACCESS_KEY", "very-secret-value");
        jail.set_env("SMOOTHD_S3_PREFIX", "/smoothd/prod/");
        let s = Settings::load(None).map_err(|e| e.to_string())?;
        let s3 = s.s3().ok_or("no S3 config")?;
        assert_eq!(s3.bucket, "smoothd-artifacts");
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s3.region.as_deref(), Some("eu-west-1"));
        assert_eq!(s3.access_key_id.as_deref(), Some("AKIDEXAMPLE"));
        assert_eq!(s3.prefix.as_deref(), Some("smoothd/prod"));
        let shown = format!("{s:?} {s3:?}");
        assert!(!shown.contains("very-secret-value"), "{shown}");
        // Building the client sends nothing, so it works without a server.
        smoothd_store::Blobs::s3(&s3).map_err(|e| e.to_string())?;
        Ok(())
    });
}

#[test]
fn bad_s3_settings_name_the_key() {
    figment::Jail::expect_with(|jail| {
        // The test command itself runs with SMOOTHD_TEST_* variables set.
        jail.clear_env();
        let refused = |jail: &mut figment::Jail, key: &str, value: &str, expect: &str| {
            jail.set_env(key, value);
            let err = format!("{:#}", Settings::load(None).unwrap_err());
            assert!(err.contains(expect), "{key}={value:?}: {err}");
        };
        refused(
            jail,
            "SMOOTHD_S3_ENDPOINT",
            "http://127.0.0.1:9000",
            "s3_bucket (SMOOTHD_S3_BUCKET)",
        );
        refused(
            jail,
            "SMOOTHD_S3_BUCKET",
            "Not_A_Bucket",
            "s3_bucket (SMOOTHD_S3_BUCKET)",
        );
        jail.set_env("SMOOTHD_S3_BUCKET", "artifacts");
        refused(
            jail,
            "SMOOTHD_S3_ENDPOINT",
            "127.0.0.1:9000",
            "s3_endpoint (SMOOTHD_S3_ENDPOINT)",
        );
        refused(
            jail,
            "SMOOTHD_S3_ENDPOINT",
            "ftp://127.0.0.1",
            "s3_endpoint (SMOOTHD_S3_ENDPOINT)",
        );
        jail.set_env("SMOOTHD_S3_ENDPOINT", "https://s3.example.com");
        refused(
            jail,
            "SMOOTHD_S3_REGION",
            "eu west",
            "s3_region (SMOOTHD_S3_REGION)",
        );
        jail.set_env("SMOOTHD_S3_REGION", "eu-west-1");
        refused(jail, "SMOOTHD_S3_ACCESS_KEY_ID", "AKID", "go together");
        jail.set_env("SMOOTHD_S3_SECRET_ACCESS_KEY", "secret");
        refused(jail, "SMOOTHD_S3_PREFIX", "a//b", "s3_prefix (SMOOTHD_S3_PREFIX)");
        refused(
            jail,
            "SMOOTHD_S3_PREFIX",
            "a/../b",
            "s3_prefix (SMOOTHD_S3_PREFIX)",
        );
        jail.set_env("SMOOTHD_S3_PREFIX", "a/b");
        Settings::load(None).map_err(|e| e.to_string())?;
        Ok(())
    });
}

#[test]
fn bad_tunnel_settings_name_the_key() {
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        for (key, value, expect) in [
            (
                "SMOOTHD_TUNNEL_LISTEN",
                "host443",
                "tunnel_listen (SMOOTHD_TUNNEL_LISTEN)",
            ),
            (
                "SMOOTHD_TUNNEL_HOST",
                "browser-live.example.com",
                "tunnel_host (SMOOTHD_TUNNEL_HOST)",
            ),
            (
                "SMOOTHD_TUNNEL_HOST",
                "example.com:443",
                "tunnel_host (SMOOTHD_TUNNEL_HOST)",
            ),
            ("SMOOTHD_TUNNEL_CERT_FILE", "/x.pem", "set both or neither"),
            (
                "SMOOTHD_TUNNEL_WAIT_SECONDS",
                "0",
                "tunnel_wait_seconds (SMOOTHD_TUNNEL_WAIT_SECONDS)",
            ),
        ] {
            jail.clear_env();
            jail.set_env(key, value);
            let err = format!("{:#}", Settings::load(None).unwrap_err());
            assert!(err.contains(expect), "{key}={value:?}: {err}");
        }
        jail.clear_env();
        jail.set_env("SMOOTHD_TUNNEL_LISTEN", "0.0.0.0:443");
        jail.set_env("SMOOTHD_TUNNEL_HOST", "browser-proxy.example.com");
        let s = Settings::load(None).map_err(|e| e.to_string())?;
        assert_eq!(s.tunnel_listen.as_deref(), Some("0.0.0.0:443"));
        assert_eq!(s.tunnel_wait_seconds, 30);
        Ok(())
    });
}

#[test]
fn limit_and_browser_settings_from_the_environment() {
    figment::Jail::expect_with(|jail| {
        // The test command itself runs with SMOOTHD_TEST_* variables set.
        jail.clear_env();
        let s = Settings::load(None).map_err(|e| e.to_string())?;
        assert_eq!(
            (
                s.rate_limit_per_minute,
                s.max_running_per_key,
                s.browser_ws.as_deref()
            ),
            (0, 0, None),
            "limits are off and Chromium is local unless asked otherwise"
        );
        jail.set_env("SMOOTHD_RATE_LIMIT_PER_MINUTE", "120");
        jail.set_env("SMOOTHD_MAX_RUNNING_PER_KEY", "4");
        jail.set_env(
            "SMOOTHD_BROWSER_WS",
            "ws://10.0.0.5:3000/devtools/browser/abc?token=s3cret",
        );
        let s = Settings::load(None).map_err(|e| e.to_string())?;
        assert_eq!((s.rate_limit_per_minute, s.max_running_per_key), (120, 4));
        assert!(
            s.browser_ws
                .as_deref()
                .is_some_and(|u| u.ends_with("token=s3cret"))
        );
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("s3cret"),
            "a fleet token stays out of logs: {shown}"
        );
        assert!(shown.contains("10.0.0.5:3000"), "{shown}");
        jail.set_env("SMOOTHD_BROWSER_WS", "wss://fleet.example/devtools/browser/abc");
        let err = format!("{:#}", Settings::load(None).unwrap_err());
        assert!(err.contains("browser_ws (SMOOTHD_BROWSER_WS)"), "{err}");
        jail.set_env("SMOOTHD_BROWSER_WS", "http://127.0.0.1:9222");
        jail.set_env("SMOOTHD_MAX_RUNNING_PER_KEY", "-1");
        // figment names the variable: `... for key "MAX_RUNNING_PER_KEY" in SMOOTHD_ ...`.
        let err = format!("{:#}", Settings::load(None).unwrap_err());
        assert!(err.contains("MAX_RUNNING_PER_KEY"), "{err}");
        Ok(())
    });
}

#[test]
fn a_base_url_without_a_model_is_refused() {
    figment::Jail::expect_with(|jail| {
        // The test command itself runs with SMOOTHD_TEST_* variables set.
        jail.clear_env();
        jail.set_env("SMOOTHD_LLM_BASE_URL", "http://127.0.0.1:9/v1");
        let err = Settings::load(None).unwrap_err().to_string();
        assert!(err.contains("go together"), "{err}");
        Ok(())
    });
}

#[test]
fn totp_min_validity_reaches_the_agent_and_is_bounded() {
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("SMOOTHD_LLM_BASE_URL", "http://127.0.0.1:9/v1");
        jail.set_env("SMOOTHD_LLM_MODEL", "m1");
        let s = Settings::load(None).map_err(|e| e.to_string())?;
        assert_eq!(s.totp_min_validity_seconds, 3);
        jail.set_env("SMOOTHD_TOTP_MIN_VALIDITY_SECONDS", "5");
        let s = Settings::load(None).map_err(|e| e.to_string())?;
        let agent = s.agent().map_err(|e| e.to_string())?.ok_or("no agent")?;
        assert_eq!(agent.config.totp_min_validity, std::time::Duration::from_secs(5));
        jail.set_env("SMOOTHD_TOTP_MIN_VALIDITY_SECONDS", "30");
        let err = Settings::load(None).unwrap_err().to_string();
        assert!(
            err.contains("totp_min_validity_seconds (SMOOTHD_TOTP_MIN_VALIDITY_SECONDS): at most 15"),
            "{err}"
        );
        Ok(())
    });
}

#[test]
fn captcha_timeout_from_the_environment() {
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("SMOOTHD_LLM_BASE_URL", "http://127.0.0.1:9/v1");
        jail.set_env("SMOOTHD_LLM_MODEL", "m1");
        let s = Settings::load(None).map_err(|e| e.to_string())?;
        assert_eq!(s.captcha_timeout_seconds, 300);
        jail.set_env("SMOOTHD_CAPTCHA_TIMEOUT_SECONDS", "7");
        let s = Settings::load(None).map_err(|e| e.to_string())?;
        let agent = s.agent().map_err(|e| e.to_string())?.ok_or("no agent")?;
        assert_eq!(agent.config.captcha_timeout, Duration::from_secs(7));
        jail.set_env("SMOOTHD_CAPTCHA_TIMEOUT_SECONDS", "0");
        let err = Settings::load(None).unwrap_err().to_string();
        assert!(
            err.contains("captcha_timeout_seconds (SMOOTHD_CAPTCHA_TIMEOUT_SECONDS)"),
            "{err}"
        );
        Ok(())
    });
}
