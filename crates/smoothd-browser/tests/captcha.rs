//! Challenge detection against real Chromium, on local pages with stand-in widgets: each kind is
//! found by its class name or its frame's URL, or as a "verify you are human" page; a widget
//! that is answered, invisible or gone, a frame whose URL only looks like one, and a page that
//! merely talks about captchas are not challenges.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests: a failed expectation fails the test"
)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Reply, driver, serve};
use smoothd_browser::{
    Action, BrowserProcess, BrowserSession, ChallengeKind, Driver, LaunchConfig, SessionOptions,
    find_chromium,
};

/// The page at `target` (path and query), or None for a 404.
fn page(target: &str) -> Option<String> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let body = match path {
        "/recaptcha.html" => "<div class='g-recaptcha' data-sitekey='k' style='width:304px;height:78px;border:1px solid #999'>\
             <label><input type='checkbox' id='cb'> I'm not a robot</label>\
             <textarea name='g-recaptcha-response' style='display:none'></textarea></div>\
             <p>Sign in to continue.</p>"
            .to_string(),
        "/hcaptcha.html" => "<form><div class='h-captcha' data-sitekey='k' style='width:303px;height:78px'>\
             <textarea name='h-captcha-response' style='display:none'></textarea>checkbox here</div>\
             <button>Send</button></form>"
            .to_string(),
        "/turnstile.html" => "<div class='cf-turnstile' data-sitekey='k' style='width:300px;height:65px'>\
             <input type='hidden' name='cf-turnstile-response' value=''>widget</div><p>Contact us</p>"
            .to_string(),
        // One frame, its src from the query (percent-encoded), and `style` for the frame.
        "/frame.html" => {
            let mut src = String::new();
            let mut style = "width:304px;height:78px".to_string();
            for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
                match k.as_ref() {
                    "src" => src = v.into_owned(),
                    "style" => style = v.into_owned(),
                    _ => {}
                }
            }
            format!("<p>A form</p><div><div><iframe src='{src}' style='{style}'></iframe></div></div>")
        }
        "/interstitial.html" => "<title>Just a moment...</title><h1>www.example.com</h1>\
             <p>Verify you are human by completing the action below.</p>\
             <p>www.example.com needs to review the security of your connection before proceeding.</p>"
            .to_string(),
        "/checking.html" => "<title>Please wait</title><p>Checking your browser before accessing the site.</p>".to_string(),
        // Talks about captchas, names the widgets and their class, and is long: not a challenge.
        "/article.html" => {
            let para = "A captcha asks a visitor to prove they are human: Google's reCAPTCHA shows an \
                 \"I'm not a robot\" checkbox, hCaptcha asks to pick images, and Cloudflare Turnstile \
                 mostly runs unseen. Sites add them with a tag such as <code>&lt;div class=\"g-recaptcha\"&gt;</code>; \
                 some show a page that says \"Verify you are human\" before the real content. ";
            format!("<title>What is a captcha?</title><h1>What is a captcha?</h1><p>{}</p>", para.repeat(4))
        }
        // Short, and quotes the phrases an interstitial says: talked about, not asked.
        "/quoted.html" => "<title>Help</title><p>If a site shows \"Verify you are human\" or an \u{201c}I'm not a robot\u{201d} \
             captcha, solve it and carry on.</p>"
            .to_string(),
        "/mention.html" => "<title>Sign up</title><p>Our sign-up form has a captcha. Turnstile, hCaptcha and reCAPTCHA are all supported.</p>".to_string(),
        // An invisible reCAPTCHA bound to a button, and a widget whose script never ran (empty).
        "/invisible.html" => "<form><button class='g-recaptcha' data-sitekey='k' data-callback='go'>Submit</button>\
             <div class='h-captcha' data-sitekey='k'></div>\
             <div class='g-recaptcha' data-size='invisible' style='width:300px;height:80px'>x</div></form>"
            .to_string(),
        _ => return None,
    };
    Some(format!("<!doctype html><html><body>{body}</body></html>"))
}

/// Serves [`page`] on 127.0.0.1:0 (one request per connection); returns its base URL.
async fn site() -> String {
    serve(|target| page(target).map(Reply::html)).await.0
}

/// A browser that reaches only 127.0.0.1 (the captcha providers' hosts fail at once).
async fn browser() -> Arc<BrowserProcess> {
    let chromium: PathBuf = find_chromium(std::env::var("SMOOTHD_CHROMIUM").ok().as_deref())
        .unwrap_or_else(|e| panic!("these tests need Chromium: {e}"));
    let mut cfg = LaunchConfig::new(chromium);
    cfg.extra_args = vec!["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1".into()];
    Arc::new(BrowserProcess::launch(&cfg, &[]).await.unwrap())
}

async fn open(d: &mut Driver<'_>, url: String) {
    let r = d.act(Action::Goto { url: url.clone() }).await.unwrap();
    assert!(r.navigated, "{url}: {r:?}");
}

/// The kind found on the current page, by the cheap check.
async fn kind(d: &Driver<'_>) -> Option<ChallengeKind> {
    d.challenge().await.unwrap().map(|c| c.kind)
}

fn frame_url(site: &str, src: &str, style: &str) -> String {
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("src", src)
        .append_pair("style", style)
        .finish();
    format!("{site}/frame.html?{q}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn widgets_are_found_by_class_until_answered_or_gone() {
    let site = site().await;
    let session = BrowserSession::open(browser().await, SessionOptions::default())
        .await
        .unwrap();
    let mut d = driver(&session).await;

    open(&mut d, format!("{site}/recaptcha.html")).await;
    // The view carries it (no extra call), and says what it is.
    let view = d.observe().await.unwrap();
    let c = view
        .challenge
        .clone()
        .unwrap_or_else(|| panic!("no challenge in {view:?}"));
    assert_eq!(c.kind, ChallengeKind::Recaptcha);
    assert!(c.description.contains("reCAPTCHA"), "{c:?}");
    assert_eq!(kind(&d).await, Some(ChallengeKind::Recaptcha));
    // Answered: the widget's response field has a token (and the site reveals its content a
    // moment later, which the view after the challenge waits for).
    session
        .evaluate(
            "document.querySelector('[name=g-recaptcha-response]').value = 'token'; \
             setTimeout(() => document.body.insertAdjacentHTML('beforeend', '<p>Revealed</p>'), 200)",
            None,
        )
        .await
        .unwrap();
    assert_eq!(kind(&d).await, None);
    d.after_challenge().await;
    let view = d.observe().await.unwrap();
    assert_eq!(view.challenge, None, "{}", view.text);
    assert!(view.text.contains("Revealed"), "{}", view.text);

    open(&mut d, format!("{site}/hcaptcha.html")).await;
    assert_eq!(kind(&d).await, Some(ChallengeKind::Hcaptcha));
    // Gone: the page removed it.
    session
        .evaluate("document.querySelector('.h-captcha').remove()", None)
        .await
        .unwrap();
    assert_eq!(kind(&d).await, None);

    open(&mut d, format!("{site}/turnstile.html")).await;
    assert_eq!(kind(&d).await, Some(ChallengeKind::Turnstile));
    // Hidden counts as gone.
    session
        .evaluate(
            "document.querySelector('.cf-turnstile').style.visibility = 'hidden'",
            None,
        )
        .await
        .unwrap();
    assert_eq!(kind(&d).await, None);

    // An invisible reCAPTCHA (on a button, or data-size=invisible) and a widget that never
    // rendered ask nothing of anyone.
    open(&mut d, format!("{site}/invisible.html")).await;
    assert_eq!(kind(&d).await, None);

    // The check is cheap enough to poll: one small evaluation.
    open(&mut d, format!("{site}/recaptcha.html")).await;
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(kind(&d).await, Some(ChallengeKind::Recaptcha));
    }
    let each = started.elapsed() / 20;
    eprintln!("challenge check: {each:?} each");
    assert!(each < Duration::from_millis(100), "{each:?}");
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_are_found_by_their_providers_url_only() {
    let site = site().await;
    let session = BrowserSession::open(browser().await, SessionOptions::default())
        .await
        .unwrap();
    let mut d = driver(&session).await;
    let size = "width:304px;height:78px";
    let found = [
        (
            "https://www.google.com/recaptcha/api2/anchor?ar=1&k=key&size=normal",
            ChallengeKind::Recaptcha,
        ),
        (
            "https://www.recaptcha.net/recaptcha/enterprise/anchor?k=key",
            ChallengeKind::Recaptcha,
        ),
        (
            "https://newassets.hcaptcha.com/captcha/v1/abc/static/hcaptcha.html#frame=checkbox&id=0",
            ChallengeKind::Hcaptcha,
        ),
        (
            "https://challenges.cloudflare.com/cdn-cgi/challenge-platform/h/b/turnstile/if/ov2/av0/rcv/x/0x4AAA/light/normal",
            ChallengeKind::Turnstile,
        ),
    ];
    for (src, want) in found {
        open(&mut d, frame_url(&site, src, size)).await;
        let c = d.challenge().await.unwrap();
        assert_eq!(c.as_ref().map(|c| c.kind), Some(want), "{src}: {c:?}");
    }
    let not_found = [
        // reCAPTCHA v3 and invisible v2: the badge's frame.
        (
            "https://www.google.com/recaptcha/api2/anchor?k=key&size=invisible",
            size,
        ),
        (
            "https://newassets.hcaptcha.com/captcha/v1/abc/static/hcaptcha.html#frame=checkbox-invisible",
            size,
        ),
        // Other pages of the same hosts.
        ("https://www.google.com/maps/embed?pb=1", size),
        // A local frame whose path looks like reCAPTCHA's: only the provider's host counts.
        (&format!("{site}/recaptcha/api2/anchor?k=key") as &str, size),
        // The real URL in a frame no one can see.
        (
            "https://www.google.com/recaptcha/api2/anchor?k=key",
            "display:none",
        ),
        (
            "https://www.google.com/recaptcha/api2/bframe?k=key",
            "width:400px;height:580px;visibility:hidden",
        ),
    ];
    for (src, style) in not_found {
        open(&mut d, frame_url(&site, src, style)).await;
        assert_eq!(kind(&d).await, None, "{src} ({style})");
    }
    // A frame's widget is answered when the response field beside it has a token.
    open(
        &mut d,
        frame_url(&site, "https://www.google.com/recaptcha/api2/anchor?k=key", size),
    )
    .await;
    session
        .evaluate(
            "const t = document.createElement('textarea'); t.name = 'g-recaptcha-response'; t.value = 'tok'; \
             t.style.display = 'none'; document.querySelector('iframe').parentElement.parentElement.append(t)",
            None,
        )
        .await
        .unwrap();
    assert_eq!(kind(&d).await, None);
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interstitials_are_short_pages_asking_for_a_human_and_mentions_are_not() {
    let site = site().await;
    let session = BrowserSession::open(browser().await, SessionOptions::default())
        .await
        .unwrap();
    let mut d = driver(&session).await;

    open(&mut d, format!("{site}/interstitial.html")).await;
    let c = d
        .challenge()
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no interstitial"));
    assert_eq!(c.kind, ChallengeKind::Interstitial);
    assert!(c.description.contains("Verify you are human"), "{c:?}");
    let view = d.observe().await.unwrap();
    assert_eq!(view.challenge.map(|c| c.kind), Some(ChallengeKind::Interstitial));

    open(&mut d, format!("{site}/checking.html")).await;
    assert_eq!(kind(&d).await, Some(ChallengeKind::Interstitial));
    // The page moves on (the check passed): nothing is in the way any more.
    session
        .evaluate(
            "document.title = 'Shop'; document.body.innerHTML = '<h1>Welcome to the shop</h1>'",
            None,
        )
        .await
        .unwrap();
    assert_eq!(kind(&d).await, None);

    for page in ["article.html", "mention.html", "quoted.html"] {
        open(&mut d, format!("{site}/{page}")).await;
        let view = d.observe().await.unwrap();
        assert!(view.text.to_lowercase().contains("captcha"), "{}", view.text);
        assert_eq!(view.challenge, None, "{page}: {}", view.text);
        assert_eq!(kind(&d).await, None, "{page}");
    }
    session.close().await;
}
