//! The Approvals view's quota panel: one line per tenant, a gauge per dimension (nodes,
//! cpu, memory, storage) of what is held now against the limit. Figures come from
//! `App::quotas`, built when the data arrived.

use crate::domain::validate::sanitize;
use crate::tui::app::App;
use crate::tui::quota::Share;
use crate::tui::theme::Theme;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::Span;
use ratatui::widgets::{Block, Borders};
use ratatui::Frame;

/// The panel needs this many rows of the body below it for the queue to stay useful.
const QUEUE_MIN: u16 = 11;
/// Below this body height (a terminal under 20 rows) the queue gets the whole body.
const BODY_MIN: u16 = 16;
/// The longest tenant name shown whole.
const NAME_MAX: usize = 16;
/// The narrowest gauge bar worth drawing.
const BAR_MIN: usize = 4;

/// How the panel lays out its columns for a given width.
struct Layout {
    name_w: usize,
    nums_w: usize,
    bar_w: usize,
}

fn layout(app: &App, inner_w: usize) -> Option<Layout> {
    let q = &app.quotas.tenants;
    let name_w = q
        .iter()
        .map(|t| label(&t.name, t.pending).chars().count())
        .max()?
        .min(NAME_MAX);
    let nums_w = q
        .iter()
        .flat_map(|t| t.shares())
        .map(|s| figures(&s).len())
        .max()?;
    // name, then four of: " " label(4) " " [bar " "] figures
    let fixed = name_w + 4 * (1 + 4 + 1 + nums_w);
    if fixed > inner_w {
        return None;
    }
    let bar_w = (inner_w - fixed) / 4;
    let bar_w = if bar_w > BAR_MIN { bar_w - 1 } else { 0 };
    Some(Layout {
        name_w,
        nums_w,
        bar_w: bar_w.min(30),
    })
}

fn label(name: &str, pending: usize) -> String {
    let name = sanitize(name);
    if pending > 0 {
        format!("{name} ({pending})")
    } else {
        name.into_owned()
    }
}

/// At most four letters, so that the panel fits 80 columns.
fn short_name(name: &str) -> &str {
    match name {
        "nodes" => "node",
        other => other,
    }
}

fn figures(s: &Share) -> String {
    format!("{}/{}", s.used, s.limit)
}

/// By how full: ≥ 90 % (or over) the error style, ≥ 75 % the warning style.
fn fullness(th: Theme, s: &Share) -> Style {
    match s.permille() {
        p if p >= 900 => th.error(),
        p if p >= 750 => th.warn(),
        _ => th.ok(),
    }
}

/// Splits `area` into the panel and what is left for the queue; the panel is left out
/// (`None`) when the screen is too small for it and the queue together.
pub fn split(app: &App, area: Rect) -> (Option<Rect>, Rect) {
    let tenants = app.quotas.tenants.len() as u16;
    let room = area.height.saturating_sub(QUEUE_MIN + 2);
    if tenants == 0
        || area.height < BODY_MIN
        || room == 0
        || layout(app, area.width.saturating_sub(2) as usize).is_none()
    {
        return (None, area);
    }
    let h = tenants.min(room) + 2;
    let panel = Rect { height: h, ..area };
    let rest = Rect {
        y: area.y + h,
        height: area.height - h,
        ..area
    };
    (Some(panel), rest)
}

pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let th = app.theme;
    let tenants = &app.quotas.tenants;
    let shown = (area.height.saturating_sub(2) as usize).min(tenants.len());
    let more = tenants.len() - shown;
    let title = if more > 0 {
        format!(" Quotas: held / limit · (n) awaiting approval · {more} more tenant(s) ")
    } else {
        " Quotas: held / limit · (n) awaiting approval ".to_string()
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .title(Span::styled(title, th.title()));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let Some(l) = layout(app, inner.width as usize) else {
        return;
    };
    // The selected request's tenant stands out (looked up by row, not searched for).
    let table = app.table();
    let selected_tenant = table
        .visible
        .get(table.selected)
        .and_then(|i| app.snap.requests.get(*i))
        .map(|r| r.tenant.clone());
    let buf = f.buffer_mut();
    let right = inner.x + inner.width;
    for (row, t) in tenants.iter().take(shown).enumerate() {
        let y = inner.y + row as u16;
        let name_style = if selected_tenant.as_deref() == Some(t.name.as_str()) {
            th.key()
        } else {
            Style::default()
        };
        let mut x = inner.x;
        let put = |buf: &mut ratatui::buffer::Buffer, x: u16, text: &str, w: usize, st: Style| {
            let w = w.min(right.saturating_sub(x) as usize);
            buf.set_stringn(x, y, text, w, st);
            x.saturating_add(w as u16)
        };
        x = put(buf, x, &label(&t.name, t.pending), l.name_w, name_style);
        for s in t.shares() {
            let style = fullness(th, &s);
            x = put(buf, x, " ", 1, Style::default());
            x = put(buf, x, &format!("{:<4} ", short_name(s.name)), 5, th.dim());
            if l.bar_w > 0 {
                x = put(buf, x, &bar(&s, l.bar_w), l.bar_w, style);
                x = put(buf, x, " ", 1, Style::default());
            }
            let nums = format!("{:>w$}", figures(&s), w = l.nums_w);
            let nums_style = if s.permille() >= 750 {
                style
            } else {
                Style::default()
            };
            x = put(buf, x, &nums, l.nums_w, nums_style);
        }
    }
}

/// A bar of `w` cells filled in proportion to the share (at least one cell for any use,
/// all of it at or over the limit).
fn bar(s: &Share, w: usize) -> String {
    let p = s.permille();
    let filled = if p >= 1000 {
        w
    } else if s.used > 0 {
        ((p as usize * w + 500) / 1000).clamp(1, w)
    } else {
        0
    };
    let mut out = "█".repeat(filled);
    out.push_str(&"░".repeat(w - filled));
    out
}
