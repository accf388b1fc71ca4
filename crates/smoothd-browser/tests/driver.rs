//! The agent's page view and actions against real Chromium and the fixture pages in
//! `tests/fixtures/site`, with no model and no server: observe lists what a person could use,
//! and each action changes the page as a person's would.
mod common;

use common::{browser, eval, fixture_site, index_of};
use serde_json::{Value, json};
use smoothd_browser::{Action, BrowserSession, Driver, SessionOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_view_lists_a_forms_fields_and_actions_fill_and_submit_it() {
    let site = fixture_site().await;
    let process = browser().await;
    let session = BrowserSession::open(process, SessionOptions::default())
        .await
        .unwrap();
    let mut d = Driver::new(&session);
    d.install().await.unwrap();
    let r = d
        .act(Action::Goto {
            url: format!("{site}/agent/form.html"),
        })
        .await
        .unwrap();
    assert!(r.navigated, "{r:?}");
    assert!(r.note.contains("/agent/form.html"), "{r:?}");

    let view = d.observe().await.unwrap();
    assert_eq!(view.title, "Sign up");
    assert!(view.url.ends_with("/agent/form.html"), "{}", view.url);
    // Two text fields, the select, the checkbox, three radios and the button.
    assert_eq!(view.elements, 8, "{}", view.text);
    assert_eq!(view.cross_origin, 0);
    for needle in ["fullname", "email", "select", "checkbox", "Create account"] {
        index_of(&view, needle);
    }
    assert!(view.text.contains("Full name"), "{}", view.text);
    // Nothing changed: the next view is the same, and its key says so.
    let again = d.observe().await.unwrap();
    assert_eq!(
        (again.key.as_str(), again.elements),
        (view.key.as_str(), view.elements)
    );

    let name = index_of(&view, "fullname");
    let r = d
        .act(Action::Type {
            index: name,
            text: "Ada Lovelace".into(),
            submit: false,
        })
        .await
        .unwrap();
    assert!(!r.navigated && r.note.contains(&format!("[{name}]")), "{r:?}");
    d.act(Action::Type {
        index: index_of(&view, "email"),
        text: "ada@example.com".into(),
        submit: false,
    })
    .await
    .unwrap();
    let r = d
        .act(Action::SelectOption {
            index: index_of(&view, "select"),
            option: "Team".into(),
        })
        .await
        .unwrap();
    assert!(r.note.contains("\"Team\""), "{r:?}");
    d.act(Action::Click {
        index: index_of(&view, "checkbox"),
    })
    .await
    .unwrap();
    assert_eq!(
        eval(
            &session,
            "[fullname.value, email.value, plan.value, news.checked]"
        )
        .await,
        json!(["Ada Lovelace", "ada@example.com", "Team", true])
    );
    // The view shows what was typed.
    let view = d.observe().await.unwrap();
    assert!(view.text.contains("Ada Lovelace"), "{}", view.text);
    // The page helper lives in a world of its own: the page's globals and timers are untouched.
    assert_eq!(
        eval(
            &session,
            "[typeof window.__smoothd, Object.getOwnPropertyNames(window).filter(n => n.startsWith('__smoothd')).length, Object.getOwnPropertyNames(setTimeout).join(), Function.prototype.toString.call(setTimeout)]"
        )
        .await,
        json!(["undefined", 0, "length,name", "function setTimeout() { [native code] }"])
    );

    d.act(Action::Click {
        index: index_of(&view, "Create account"),
    })
    .await
    .unwrap();
    let view = d.observe().await.unwrap();
    assert_eq!(view.title, "Account created");
    assert!(view.text.contains("Confirmation: TEAM-M-Y-12"), "{}", view.text);
    // A bad index is the model's error, and the task goes on.
    let e = d.act(Action::Click { index: 999 }).await.unwrap_err();
    assert!(!e.is_fatal(), "{e}");
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scroll_keys_and_history_move_the_page() {
    let site = fixture_site().await;
    let process = browser().await;
    let session = BrowserSession::open(process, SessionOptions::default())
        .await
        .unwrap();
    let mut d = Driver::new(&session);
    d.install().await.unwrap();
    d.act(Action::Goto {
        url: format!("{site}/agent/search.html"),
    })
    .await
    .unwrap();
    let view = d.observe().await.unwrap();
    // Typing with Enter submits the search form: a new document loads. (The result may say
    // `navigated: false`: a form's navigation can start after the DOM went quiet; the next view
    // is right in any case.)
    let r = d
        .act(Action::Type {
            index: index_of(&view, "Search products"),
            text: "lamp".into(),
            submit: true,
        })
        .await
        .unwrap();
    assert!(r.navigated || r.note.contains("pressed Enter"), "{r:?}");
    let view = d.observe().await.unwrap();
    assert!(view.title.starts_with("Results for lamp"), "{}", view.title);
    assert!(view.text.contains("Product: Desk Lamp"), "{}", view.text);
    d.act(Action::Click {
        index: index_of(&view, "Next page"),
    })
    .await
    .unwrap();
    assert!(d.observe().await.unwrap().title.contains("page 2 of"));
    let r = d.act(Action::GoBack).await.unwrap();
    assert!(r.navigated, "{r:?}");
    assert!(d.observe().await.unwrap().title.contains("page 1 of"));

    // A tall page scrolls, and the view says how much is above.
    eval(&session, "document.body.style.height = '6000px'").await;
    let before = d.observe().await.unwrap();
    assert_eq!(before.above, 0);
    let r = d
        .act(Action::Scroll {
            down: true,
            pages: 1.0,
        })
        .await
        .unwrap();
    assert!(r.note.starts_with("scrolled down"), "{r:?}");
    assert!(eval(&session, "scrollY").await.as_f64().unwrap() > 0.0);
    let after = d.observe().await.unwrap();
    assert!(after.above > 0 && after.key != before.key, "{after:?}");
    // Home scrolls back to the top (the page's own key handling, which may animate).
    eval(
        &session,
        "document.activeElement && document.activeElement.blur()",
    )
    .await;
    d.act(Action::PressKey { key: "Home".into() }).await.unwrap();
    let mut y = eval(&session, "scrollY").await;
    for _ in 0..30 {
        if y == json!(0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        y = eval(&session, "scrollY").await;
    }
    assert_eq!(y, json!(0));
    let r = d
        .act(Action::Scroll {
            down: false,
            pages: 1.0,
        })
        .await
        .unwrap();
    assert!(r.note.contains("already at the top"), "{r:?}");
    let e = d
        .act(Action::PressKey {
            key: "NoSuchKey".into(),
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("unknown key"), "{e}");
    // The one tab, current; a screenshot is a JPEG.
    let tabs = d.tabs().await.unwrap();
    assert_eq!((tabs.len(), d.current_tab(&tabs)), (1, 0));
    let jpeg = d.screenshot(false, true).await.unwrap();
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
    assert!(d.page_text(10_000).await.unwrap().contains("Catalogue"));
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_frames_are_read_in_place_and_driven() {
    let site = fixture_site().await;
    let other = fixture_site().await;
    let process = browser().await;
    let session = BrowserSession::open(process, SessionOptions::default())
        .await
        .unwrap();
    let mut d = Driver::new(&session);
    d.install().await.unwrap();
    d.act(Action::Goto {
        url: format!("{site}/agent/frames.html?terms={other}"),
    })
    .await
    .unwrap();
    // The frames load after the page: look until both are in the view.
    let mut view = d.observe().await.unwrap();
    for _ in 0..50 {
        if view.text.contains("Pay now") && view.text.matches("--- end iframe ---").count() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        view = d.observe().await.unwrap();
    }
    assert_eq!(view.cross_origin, 0, "{}", view.text);
    assert!(
        view.text.contains("--- iframe http://localhost:"),
        "{}",
        view.text
    );
    let holder = index_of(&view, "Card holder");
    d.act(Action::Type {
        index: holder,
        text: "Grace".into(),
        submit: false,
    })
    .await
    .unwrap();
    d.act(Action::SelectOption {
        index: index_of(&view, "Visa"),
        option: "Mastercard".into(),
    })
    .await
    .unwrap();
    d.act(Action::Click {
        index: index_of(&view, "Pay now"),
    })
    .await
    .unwrap();
    let mut status = Value::Null;
    for _ in 0..30 {
        status = eval(&session, "document.getElementById('status').textContent").await;
        if status.as_str().is_some_and(|s| s.contains("PAID")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, json!("Frames said: PAID by Grace with Mastercard"));
    session.close().await;
}
