//! Scratch timing (not committed).
mod support;
use mailfleet::store::{ConsoleReader, ConsoleUpdate};
use mailfleet::tui::action::Action;
use mailfleet::tui::app::App;
use mailfleet::tui::keymap::Keymap;
use mailfleet::tui::theme::Theme;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn scratch() {
    let path = std::path::PathBuf::from(std::env::var("DB").expect("DB"));
    let cfg = mailfleet::demo::config_for(
        &config(""),
        &mailfleet::demo::DemoSpec {
            nodes: 100_000,
            seed: 1,
        },
    );
    let store = mailfleet::store::Store::open(&path, &cfg.store)
        .await
        .expect("open");
    let t = Instant::now();
    let page = store.console_first_page(200).await.expect("page");
    println!(
        "first page {:?} ({} rows of {})",
        t.elapsed(),
        page.nodes.len(),
        page.total
    );
    let t = Instant::now();
    let (u, reader) = store
        .console_read(ConsoleReader::new())
        .await
        .expect("read");
    println!("full read {:?}", t.elapsed());
    let ConsoleUpdate::Full(snap) = u else {
        panic!()
    };
    let mut app = App::new(
        Arc::new(cfg.clone()),
        Keymap::new(&BTreeMap::new()).expect("k"),
        "a".into(),
        "db".into(),
        false,
        Theme::plain(),
    );
    let t = Instant::now();
    app.set_snapshot(Arc::new(snap));
    println!("set_snapshot {:?}", t.elapsed());
    for (name, a) in [
        ("sort rep", Action::SortBy(5)),
        ("sort label", Action::SortBy(0)),
        ("sort ip", Action::SortBy(1)),
    ] {
        let t = Instant::now();
        app.update(a);
        println!("{name} {:?}", t.elapsed());
    }
    for f in ["a", "ac", "acm", "acme", "node-0"] {
        let t = Instant::now();
        app.apply_filter(f);
        println!(
            "filter {f} {:?} -> {}",
            t.elapsed(),
            app.table().visible.len()
        );
    }
    app.apply_filter("");
    let db = rusqlite::Connection::open(&path).expect("db");
    let t = Instant::now();
    db.execute(
        "UPDATE nodes SET reputation_score = reputation_score + 1 WHERE rowid IN (5, 500, 5000)",
        [],
    )
    .expect("u");
    println!("3-row update {:?}", t.elapsed());
    let t = Instant::now();
    let (u, _reader) = store.console_read(reader).await.expect("read");
    println!("delta read {:?}", t.elapsed());
    let ConsoleUpdate::Delta(d) = u else { panic!() };
    let t = Instant::now();
    app.apply_delta(d);
    println!("apply delta {:?}", t.elapsed());
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    for l in status
        .lines()
        .filter(|l| l.starts_with("VmHWM") || l.starts_with("VmRSS"))
    {
        println!("{l}");
    }
}
