//! The loop guard's detectors, and the progress they must not mistake for a loop.

use serde_json::json;

use super::*;

fn view(step: u32, url: &str, body: &str) -> String {
    format!("Step {step}/30\nURL: {url}\nTitle: t\nViewport 800x600; 0 px above, 0 px below\n{body}")
}

fn act(name: &str, args: serde_json::Value) -> ActionTrace {
    ActionTrace {
        name: name.into(),
        args,
        result: "ok".into(),
    }
}

/// Runs steps (url, view body, actions) and returns each observation's verdict.
fn run(guard: &mut Guard, steps: &[(&str, String, Vec<ActionTrace>)]) -> Vec<Verdict> {
    steps
        .iter()
        .enumerate()
        .map(|(i, (url, body, actions))| {
            let v = guard.observe(url, &view(i as u32 + 1, url, body));
            guard.acted(actions);
            v
        })
        .collect()
}

fn click(i: u64) -> Vec<ActionTrace> {
    vec![act("click", json!({"index": i}))]
}

const PAGE: &str = "Pick one\n*[0]<button id=prev>Back\n[1]<button id=next>Next";

fn kinds(v: &[Verdict]) -> String {
    v.iter()
        .map(|v| match v {
            Verdict::Clear => '.',
            Verdict::Warn { .. } => 'W',
            Verdict::Stop { .. } => 'S',
        })
        .collect()
}

#[test]
fn the_same_click_on_an_unchanged_page_warns_then_stops() {
    let mut g = Guard::new(GuardConfig::default());
    let steps: Vec<_> = (0..6)
        .map(|_| ("http://x/a", PAGE.to_string(), click(1)))
        .collect();
    let v = run(&mut g, &steps);
    assert_eq!(kinds(&v), "...WWS");
    let Verdict::Warn { line, note } = &v[3] else {
        unreachable!()
    };
    assert!(
        line.starts_with("WARNING: you have repeated click on <button id=next>Next 3 times on the same page"),
        "{line}"
    );
    assert!(note.contains("click on <button id=next>Next"), "{note}");
    let Verdict::Stop { reason } = &v[5] else {
        unreachable!()
    };
    assert_eq!(
        reason,
        "the agent was in a loop (click on <button id=next>Next 5 times, page unchanged)"
    );
}

#[test]
fn the_new_element_marks_do_not_make_a_page_look_changed() {
    let mut g = Guard::new(GuardConfig::default());
    let fresh = "Pick one\n*[0]<button id=prev>Back\n*[1]<button id=next>Next";
    let seen = "Pick one\n[0]<button id=prev>Back\n[1]<button id=next>Next";
    let steps = vec![
        ("http://x/a", fresh.to_string(), click(1)),
        ("http://x/a", seen.to_string(), click(1)),
        ("http://x/a", seen.to_string(), click(1)),
        ("http://x/a", seen.to_string(), click(1)),
    ];
    assert_eq!(kinds(&run(&mut g, &steps)), "...W");
}

#[test]
fn the_same_index_on_another_element_is_another_action() {
    let mut g = Guard::new(GuardConfig::default());
    // Index 1 is a different element each time (the list re-renders in another order).
    let steps: Vec<_> = (0..5)
        .map(|i| ("http://x/a", format!("[0]<a>Home\n[1]<button>Item {i}"), click(1)))
        .collect();
    assert_eq!(kinds(&run(&mut g, &steps)), ".....");
}

#[test]
fn alternating_between_two_pages_warns_then_stops() {
    let mut g = Guard::new(GuardConfig::default());
    let steps: Vec<_> = (0..7)
        .map(|i| {
            if i % 2 == 0 {
                ("http://x/a", "[0]<a>to b".to_string(), click(0))
            } else {
                ("http://x/b", "[0]<a>to a".to_string(), click(0))
            }
        })
        .collect();
    let v = run(&mut g, &steps);
    assert_eq!(kinds(&v[..6]), "...WWS");
    let Verdict::Warn { line, .. } = &v[3] else {
        unreachable!()
    };
    assert!(
        line.contains("back and forth between the same two page states (http://x/a and http://x/b)"),
        "{line}"
    );
    let Verdict::Stop { reason } = &v[5] else {
        unreachable!()
    };
    assert!(reason.contains("alternating between two page states"), "{reason}");
}

#[test]
fn steps_that_change_nothing_stall() {
    let mut g = Guard::new(GuardConfig::default());
    let steps: Vec<_> = (0..8)
        .map(|i| {
            let a = if i % 2 == 0 {
                act("wait", json!({"seconds": 1}))
            } else {
                act("scroll", json!({"down": true}))
            };
            ("http://x/a", PAGE.to_string(), vec![a])
        })
        .collect();
    let v = run(&mut g, &steps);
    assert_eq!(kinds(&v), ".....WWS");
    let Verdict::Stop { reason } = &v[7] else {
        unreachable!()
    };
    assert_eq!(
        reason,
        "the agent was in a loop (7 steps without any change to the page)"
    );
}

#[test]
fn progress_after_the_warning_clears_it() {
    let mut g = Guard::new(GuardConfig::default());
    let mut steps: Vec<_> = (0..4)
        .map(|_| ("http://x/a", PAGE.to_string(), click(1)))
        .collect();
    steps.push(("http://x/a", PAGE.to_string(), click(0)));
    steps.push((
        "http://x/b",
        "Done page".to_string(),
        vec![act("wait", json!({}))],
    ));
    steps.push((
        "http://x/b",
        "Done page".to_string(),
        vec![act("wait", json!({}))],
    ));
    assert_eq!(kinds(&run(&mut g, &steps)), "...WW..");
}

#[test]
fn paging_scrolling_and_typing_are_progress() {
    let mut g = Guard::new(GuardConfig::default());
    let pages: Vec<_> = (1..=8)
        .map(|i| {
            (
                "http://x/list",
                format!("Page {i} of 8\n[0]<button>Next"),
                click(0),
            )
        })
        .collect();
    assert_eq!(kinds(&run(&mut g, &pages)), "........");

    let mut g = Guard::new(GuardConfig::default());
    let article: Vec<_> = (0..8)
        .map(|i| {
            let body = format!(
                "Viewport 800x600; {} px above, {} px below\nChapter {i}",
                i * 600,
                4800 - i * 600
            );
            (
                "http://x/article",
                body,
                vec![act("scroll", json!({"down": true}))],
            )
        })
        .collect();
    assert_eq!(kinds(&run(&mut g, &article)), "........");

    let mut g = Guard::new(GuardConfig::default());
    let mut filled = String::new();
    let form: Vec<_> = (0..6)
        .map(|i| {
            let body = format!("[0]<input name=a{filled}>\n[1]<button>Send");
            filled.push('x');
            (
                "http://x/form",
                body,
                vec![act("type", json!({"index": 0, "text": format!("v{i}")}))],
            )
        })
        .collect();
    assert_eq!(kinds(&run(&mut g, &form)), "......");
}

#[test]
fn custom_tools_and_done_attempts_are_left_to_their_own_flows() {
    let mut g = Guard::new(GuardConfig::default());
    let steps: Vec<_> = (0..8)
        .map(|i| {
            let a = if i % 2 == 0 {
                act("lookup", json!({"q": i}))
            } else {
                act("done", json!({"output": {}}))
            };
            ("http://x/a", PAGE.to_string(), vec![a])
        })
        .collect();
    assert_eq!(kinds(&run(&mut g, &steps)), "........");
}

#[test]
fn zero_turns_a_detector_off_and_zero_grace_only_warns() {
    let off = GuardConfig {
        repeats: 0,
        alternation: 0,
        stall_steps: 0,
        grace: 2,
    };
    let mut g = Guard::new(off);
    let steps: Vec<_> = (0..9)
        .map(|_| ("http://x/a", PAGE.to_string(), click(1)))
        .collect();
    assert_eq!(kinds(&run(&mut g, &steps)), ".........");

    let warn_only = GuardConfig {
        grace: 0,
        ..GuardConfig::default()
    };
    let mut g = Guard::new(warn_only);
    assert_eq!(kinds(&run(&mut g, &steps)), "...WWWWWW");
}

#[test]
fn the_final_error_counts_the_steps_saved() {
    let mut g = Guard::new(GuardConfig::default());
    let mut last = None;
    for n in 1..=6 {
        let (view, note, halt) = g.screen("http://x/a", view(n, "http://x/a", PAGE), n, 30);
        assert_eq!(view.starts_with("WARNING: "), n == 4 || n == 5, "{n}: {view}");
        assert_eq!(note.is_some(), n >= 4, "{n}");
        g.acted(&click(1));
        last = halt;
    }
    assert_eq!(
        last.as_deref(),
        Some(
            "stopped: the agent was in a loop (click on <button id=next>Next 5 times, page unchanged); 25 of max_steps 30 steps saved"
        )
    );
}
