//! Replay's targets against real Chromium and the fixture pages: an element described on one
//! run is found again on a later one when only its place or the page's data changed, and not
//! when it was renamed; a page's shape tells the same page from an interstitial on its URL.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests: a failed expectation fails the test"
)]

mod common;

use common::{driver, eval, fixture_site, index_of, indexes_of, open, session};
use smoothd_browser::{Action, Driver, PageView, Settle, Target};

/// The text of the view's line for element `index`.
fn line(view: &PageView, index: u32) -> String {
    let tag = format!("[{index}]<");
    view.text
        .lines()
        .find(|l| l.contains(&tag))
        .unwrap_or_else(|| panic!("no element [{index}] in the view:\n{}", view.text))
        .to_string()
}

/// Describes the element whose line holds `needle`, and checks it is found where it is.
async fn round_trip(d: &mut Driver<'_>, view: &PageView, needle: &str) -> Target {
    let i = index_of(view, needle);
    let t = d.describe(i).await.unwrap();
    assert_eq!(d.find(&t).await.unwrap(), Some(i), "{needle}: {t:?}");
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_fields_and_a_pages_next_link_are_found_again() {
    let site = fixture_site().await;
    let session = session().await;
    let mut d = driver(&session).await;
    let view = open(&mut d, format!("{site}/agent/form.html")).await;
    let name = round_trip(&mut d, &view, "fullname").await;
    assert_eq!(
        (
            name.tag.as_str(),
            name.role.as_deref(),
            name.name.as_deref(),
            name.text.as_deref()
        ),
        ("input", Some("textbox"), Some("Full name"), None)
    );
    assert_eq!(name.attrs.get("name").map(String::as_str), Some("fullname"));
    assert_eq!(name.frame, None);
    let plan = round_trip(&mut d, &view, "Basic").await;
    assert_eq!(
        (plan.role.as_deref(), plan.name.as_deref()),
        (Some("combobox"), Some("Plan"))
    );
    assert_eq!(
        plan.attrs.get("options").map(String::as_str),
        Some("Basic|Pro|Team")
    );
    // Three radios share a name: each is told by its value.
    let large = round_trip(&mut d, &view, "value=L").await;
    assert_eq!(large.name.as_deref(), Some("Large"));
    let send = round_trip(&mut d, &view, "Create account").await;
    assert_eq!(
        (send.role.as_deref(), send.text.as_deref(), send.nth),
        (Some("button"), Some("Create account"), 0)
    );
    // A typed value does not change what a field is.
    d.act(Action::Type {
        index: index_of(&view, "fullname"),
        text: "Ada".into(),
        submit: false,
    })
    .await
    .unwrap();
    d.observe().await.unwrap();
    assert_eq!(d.find(&name).await.unwrap(), Some(index_of(&view, "fullname")));
    // The same field with another label and place is still found by its name and id; a field
    // that shares nothing with it is not.
    eval(
        &session,
        "const f = document.getElementById('fullname'); document.querySelector('label[for=fullname]').textContent = 'Your name'; document.getElementById('signup').appendChild(f.parentElement);",
    )
    .await;
    let view = d.observe().await.unwrap();
    let found = d.find(&name).await.unwrap().unwrap();
    assert!(line(&view, found).contains("id=fullname"), "{}", view.text);
    let mut stranger = name.clone();
    stranger.name = Some("Company".into());
    stranger.attrs = [("name".to_string(), "company".to_string())].into();
    assert_eq!(d.find(&stranger).await.unwrap(), None);

    // A paginated list: "Next page" described on page 1 is the link on page 2.
    let view = open(&mut d, format!("{site}/agent/search.html?q=lamp")).await;
    let next = round_trip(&mut d, &view, "Next page").await;
    assert_eq!(next.role.as_deref(), Some("link"));
    assert!(next.attrs["href"].ends_with("/agent/search.html"), "{next:?}");
    let shape1 = d.shape().await.unwrap();
    d.act(Action::Click {
        index: index_of(&view, "Next page"),
    })
    .await
    .unwrap();
    let view = d.observe().await.unwrap();
    assert!(view.title.contains("page 2 of"), "{}", view.title);
    assert_eq!(d.find(&next).await.unwrap(), Some(index_of(&view, "Next page")));
    // Page 2 lists other products and counts: the same page kind.
    let shape2 = d.shape().await.unwrap();
    assert_ne!(shape1.title, shape2.title);
    assert!(shape2.matches(&shape1), "{shape1:?}\n{shape2:?}");
    // The last page has no next link: nothing is found, rather than another link.
    let view = open(&mut d, format!("{site}/agent/search.html?q=lamp&page=3")).await;
    assert!(!view.text.contains("Next page"), "{}", view.text);
    assert_eq!(d.find(&next).await.unwrap(), None);
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_button_is_found_and_a_renamed_one_is_not() {
    let site = fixture_site().await;
    let session = session().await;
    let mut d = driver(&session).await;
    let shop = format!("{site}/target/shop.html");
    let view = open(&mut d, shop.clone()).await;
    let checkout = round_trip(&mut d, &view, "Checkout").await;
    assert_eq!(checkout.attrs.get("id").map(String::as_str), Some("checkout"));
    let before = index_of(&view, "Checkout");

    let view = open(&mut d, format!("{shop}?v=moved")).await;
    let now = index_of(&view, "Checkout");
    assert_ne!(now, before, "the fixture moves the button:\n{}", view.text);
    assert_eq!(d.find(&checkout).await.unwrap(), Some(now));
    // Found is what is clicked.
    d.act(Action::Click { index: now }).await.unwrap();
    assert_eq!(d.observe().await.unwrap().title, "Checked out");

    let view = open(&mut d, format!("{shop}?v=renamed")).await;
    assert!(view.text.contains("Proceed to payment"), "{}", view.text);
    assert_eq!(d.find(&checkout).await.unwrap(), None);
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_alikes_are_told_apart_by_position_and_data_does_not_matter() {
    let site = fixture_site().await;
    let session = session().await;
    let mut d = driver(&session).await;
    let shop = format!("{site}/target/shop.html");
    let view = open(&mut d, shop.clone()).await;
    let adds = indexes_of(&view, "Add to cart");
    assert_eq!(adds.len(), 3, "{}", view.text);
    let mut second = None;
    for (n, i) in adds.iter().enumerate() {
        let t = d.describe(*i).await.unwrap();
        assert_eq!(t.nth, u32::try_from(n).unwrap(), "{t:?}");
        assert_eq!(d.find(&t).await.unwrap(), Some(*i));
        if n == 1 {
            second = Some(t);
        }
    }
    let second = second.unwrap();
    // Other products and prices: the second row's button is still the second.
    let view = open(&mut d, format!("{shop}?data=2")).await;
    assert!(
        view.text.contains("Teapot") && view.text.contains("$7.25"),
        "{}",
        view.text
    );
    let found = d.find(&second).await.unwrap().unwrap();
    d.act(Action::Click { index: found }).await.unwrap();
    assert_eq!(d.observe().await.unwrap().title, "Added Mug");
    // A fourth look-alike wanted where there are three: not found.
    let mut fifth = second.clone();
    fifth.nth = 4;
    assert_eq!(d.find(&fifth).await.unwrap(), None);
    // An element off screen is scrolled to and found in the new view.
    let view = open(&mut d, shop.clone()).await;
    eval(&session, "document.getElementById('top').style.height = '3000px'").await;
    let view2 = d.observe().await.unwrap();
    assert!(!view2.text.contains("Checkout"), "{}", view2.text);
    let checkout = Target {
        tag: "button".into(),
        role: Some("button".into()),
        name: Some("Checkout".into()),
        text: Some("Checkout".into()),
        attrs: [("id".to_string(), "checkout".to_string())].into(),
        ..Target::default()
    };
    let i = d.find(&checkout).await.unwrap().unwrap();
    d.act(Action::Click { index: i }).await.unwrap();
    assert_eq!(d.observe().await.unwrap().title, "Checked out", "{}", view.text);
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_pages_elements_on_screen_are_found_and_used_with_no_view() {
    let site = fixture_site().await;
    let session = session().await;
    let mut d = driver(&session).await;
    let shop = format!("{site}/target/shop.html");
    let view = open(&mut d, shop.clone()).await;
    let second = d.describe(indexes_of(&view, "Add to cart")[1]).await.unwrap();
    let checkout = d.describe(index_of(&view, "Checkout")).await.unwrap();
    // A new document and no view of it: each element is numbered as it is found, and the
    // numbers given first still hold after the next find.
    d.act(Action::Goto {
        url: format!("{shop}?data=2"),
    })
    .await
    .unwrap();
    let found = d.find(&second).await.unwrap().unwrap();
    assert!(d.find(&checkout).await.unwrap().is_some());
    d.act(Action::Click { index: found }).await.unwrap();
    assert_eq!(d.observe().await.unwrap().title, "Added Mug");
    // Off screen on a new document: scrolled to and found in a new view, as before.
    d.act(Action::Goto { url: shop }).await.unwrap();
    eval(&session, "document.getElementById('top').style.height = '3000px'").await;
    let i = d.find(&checkout).await.unwrap().unwrap();
    d.act(Action::Click { index: i }).await.unwrap();
    assert_eq!(d.observe().await.unwrap().title, "Checked out");
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elements_in_same_and_cross_origin_frames_are_found() {
    let site = fixture_site().await;
    let other = fixture_site().await;
    let session = session().await;
    let mut d = driver(&session).await;
    let view = open(&mut d, format!("{site}/target/newsletter.html")).await;
    let sub = round_trip(&mut d, &view, "Subscribe").await;
    assert_eq!(
        sub.frame.as_deref(),
        Some(format!("{site}/target/inner.html").as_str())
    );
    let email = round_trip(&mut d, &view, "Your email").await;
    assert_eq!(email.frame, sub.frame);
    // The same button in the top document is another element.
    let mut top = sub.clone();
    top.frame = None;
    assert_eq!(d.find(&top).await.unwrap(), None);

    d.act(Action::Goto {
        url: format!("{site}/agent/frames.html?terms={other}"),
    })
    .await
    .unwrap();
    let mut view = d.observe().await.unwrap();
    for _ in 0..50 {
        if view.text.contains("Pay now") && view.text.contains("Accept terms") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        view = d.observe().await.unwrap();
    }
    // Out of process (another site) and in process (another port).
    let port = site.rsplit(':').next().unwrap();
    let pay = round_trip(&mut d, &view, "Pay now").await;
    assert_eq!(
        pay.frame.as_deref(),
        Some(format!("http://localhost:{port}/agent/frame-pay.html").as_str())
    );
    let holder = round_trip(&mut d, &view, "Card holder").await;
    assert_eq!(holder.attrs.get("name").map(String::as_str), Some("holder"));
    let terms = round_trip(&mut d, &view, "Accept terms").await;
    assert_eq!(
        terms.frame.as_deref(),
        Some(format!("{other}/agent/frame-terms.html").as_str())
    );
    // After a reload the same targets are found in the new view.
    d.act(Action::Goto {
        url: format!("{site}/agent/frames.html?terms={other}&again=1"),
    })
    .await
    .unwrap();
    let mut view = d.observe().await.unwrap();
    for _ in 0..50 {
        if view.text.contains("Pay now") && view.text.contains("Accept terms") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        view = d.observe().await.unwrap();
    }
    assert_eq!(d.find(&pay).await.unwrap(), Some(index_of(&view, "Pay now")));
    assert_eq!(
        d.find(&terms).await.unwrap(),
        Some(index_of(&view, "Accept terms"))
    );
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pages_shape_survives_its_data_and_not_an_interstitial() {
    let site = fixture_site().await;
    let session = session().await;
    let mut d = driver(&session).await;
    let shop = format!("{site}/target/shop.html");
    open(&mut d, shop.clone()).await;
    let recorded = d.shape().await.unwrap();
    assert_eq!(recorded.url, shop);
    for m in [
        "h:product list",
        "f:find a product",
        "b:search",
        "b:checkout",
        "b:add to cart",
        "l:next page",
    ] {
        assert!(recorded.marks.iter().any(|x| x == m), "{m} in {recorded:?}");
    }
    // Product names and prices are data, not marks.
    assert!(
        !recorded
            .marks
            .iter()
            .any(|m| m.contains("kettle") || m.contains("25")),
        "{recorded:?}"
    );
    assert!(d.shape().await.unwrap().matches(&recorded));

    open(&mut d, format!("{shop}?data=2")).await;
    let changed = d.shape().await.unwrap();
    assert!(changed.matches(&recorded), "{recorded:?}\n{changed:?}");
    open(&mut d, format!("{shop}?v=moved")).await;
    assert!(d.shape().await.unwrap().matches(&recorded));

    // A notice in place of the page, or over it, on the same URL.
    open(&mut d, format!("{shop}?v=interstitial")).await;
    let notice = d.shape().await.unwrap();
    assert_eq!(notice.url, recorded.url);
    assert!(!notice.matches(&recorded), "{notice:?}");
    open(&mut d, format!("{shop}?v=overlay")).await;
    let over = d.shape().await.unwrap();
    assert!(over.marks.iter().any(|m| m == "b:accept all"), "{over:?}");
    assert!(!over.matches(&recorded), "{over:?}");
    // Another page is another shape.
    open(&mut d, format!("{site}/agent/form.html")).await;
    assert!(!d.shape().await.unwrap().matches(&recorded));
    session.close().await;
}

/// A page for [`Settle::Brief`]: a form that submits (at once, or from a checkbox's change
/// handler, as filters do), and a button whose content comes from a slow fetch.
fn brief_site(target: &str) -> Option<common::Reply> {
    let path = target.split('?').next().unwrap_or("/");
    match path {
        "/a" => Some(common::Reply::html(
            "<!doctype html><title>A</title><h1>Filters</h1>\
             <form action=\"/b\"><label><input type=checkbox name=red onchange=\"this.form.submit()\"> Red</label>\
             <button type=submit>Go</button></form>\
             <button type=button id=load onclick=\"fetch('/data').then(r => r.text()).then(t => {\
               const b = document.createElement('button'); b.textContent = t; document.body.appendChild(b); })\">Load</button>",
        )),
        "/b" => Some(common::Reply::html(
            "<!doctype html><title>B</title><h1>Results</h1>",
        )),
        // Each button draws a paragraph: at once, in the next frame, from a posted message, or
        // from a short timer.
        "/c" => Some(common::Reply::html(
            "<!doctype html><title>C</title><h1>Drawn</h1><script>\
             function draw(id) { const p = document.createElement('p'); p.id = id; p.textContent = id; document.body.appendChild(p); }\
             </script>\
             <button onclick=\"draw('now')\">Now</button>\
             <button onclick=\"requestAnimationFrame(() => draw('frame'))\">Frame</button>\
             <button onclick=\"const c = new MessageChannel(); c.port1.onmessage = () => draw('posted'); c.port2.postMessage(0)\">Posted</button>\
             <button onclick=\"setTimeout(() => draw('timer'), 5)\">Timer</button>\
             <button onclick=\"setTimeout(() => draw('later'), 25)\">Later</button>",
        )),
        "/data" => Some(common::Reply {
            kind: "text/plain",
            body: b"Loaded late".to_vec(),
            delay: std::time::Duration::from_millis(300),
        }),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brief_settle_still_follows_navigations_and_waits_for_fetched_content() {
    let (site, _) = common::serve(brief_site).await;
    let session = session().await;
    let mut d = driver(&session).await;
    d.set_settle(Settle::Brief);
    // A submit button, and a checkbox whose handler submits: the new document is followed.
    for what in ["Go", "name=red"] {
        let view = open(&mut d, format!("{site}/a")).await;
        let done = d
            .act(Action::Click {
                index: index_of(&view, what),
            })
            .await
            .unwrap();
        assert!(done.navigated, "{what}: {done:?}");
        assert_eq!(d.observe().await.unwrap().title, "B", "{what}");
    }
    // Content a click fetched (300 ms) is there when the click returns, with no new view.
    let view = open(&mut d, format!("{site}/a")).await;
    let done = d
        .act(Action::Click {
            index: index_of(&view, "Load"),
        })
        .await
        .unwrap();
    assert!(!done.navigated, "{done:?}");
    let late = Target {
        tag: "button".into(),
        role: Some("button".into()),
        name: Some("Loaded late".into()),
        text: Some("Loaded late".into()),
        ..Target::default()
    };
    let found = d.find(&late).await.unwrap();
    let view = d.observe().await.unwrap();
    assert_eq!(found, Some(index_of(&view, "Loaded late")), "{}", view.text);
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brief_settle_ends_when_the_page_is_idle_and_not_before_what_it_scheduled_is_drawn() {
    let (site, _) = common::serve(brief_site).await;
    let session = session().await;
    let mut d = driver(&session).await;
    let drawn_by = [
        ("Now", "now"),
        ("Frame", "frame"),
        ("Posted", "posted"),
        ("Timer", "timer"),
    ];
    // The answer's wait also outlasts a 25 ms timer, as the model's 40 ms of quiet would.
    let answer = [drawn_by.as_slice(), &[("Later", "later")]].concat();
    for (settle, buttons) in [(Settle::Brief, drawn_by.to_vec()), (Settle::Answer, answer)] {
        d.set_settle(settle);
        let view = open(&mut d, format!("{site}/c")).await;
        // Drawn at once (the idle case), in the frame after the click, by a message the click
        // posted, by a timer: each is on the page when the click returns.
        for (button, id) in buttons {
            let done = d
                .act(Action::Click {
                    index: index_of(&view, button),
                })
                .await
                .unwrap();
            assert!(!done.navigated, "{settle:?} {button}: {done:?}");
            let drawn = eval(&session, &format!("!!document.getElementById('{id}')")).await;
            assert_eq!(drawn, serde_json::json!(true), "{settle:?} {button}");
        }
    }
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_element_of_an_older_view_is_found_only_while_it_is_not_covered() {
    let site = fixture_site().await;
    let session = session().await;
    let mut d = driver(&session).await;
    let view = open(&mut d, format!("{site}/target/shop.html")).await;
    let checkout = d.describe(index_of(&view, "Checkout")).await.unwrap();
    // The page changed since the view, not this button: the view's number still holds.
    eval(
        &session,
        "document.getElementById('rows').append(document.createElement('tr'))",
    )
    .await;
    assert_eq!(
        d.find(&checkout).await.unwrap(),
        Some(index_of(&view, "Checkout"))
    );
    // Covered since the view: not given from the old view, nor found in a new one.
    eval(
        &session,
        "const m = document.createElement('div'); m.id = 'modal'; m.textContent = 'Wait'; document.body.appendChild(m);",
    )
    .await;
    assert_eq!(d.find(&checkout).await.unwrap(), None);
    eval(&session, "document.getElementById('modal').remove()").await;
    let found = d.find(&checkout).await.unwrap().unwrap();
    d.act(Action::Click { index: found }).await.unwrap();
    assert_eq!(d.observe().await.unwrap().title, "Checked out");
    session.close().await;
}
