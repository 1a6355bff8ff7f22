//! How the CLI prints: aligned tables for people, JSON for scripts. Every string from the
//! store is sanitized before it reaches a terminal.

use crate::clock::{age, parse_ts};
use crate::domain::ids::short;
use crate::domain::validate::sanitize;
use crate::engine::reconcile::Report;
use crate::store::{EventFilter, EventRow, NodeRow, RequestDetail, RequestRow, StepRow, Store};
use chrono::{DateTime, Utc};
use color_eyre::eyre::Result;
use serde_json::{json, Value};
use std::io::Write;

pub fn print_json(v: &Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    write_json(&mut out, v, true)?;
    writeln!(out)?;
    Ok(())
}

/// Writes `v` as JSON that is safe on a terminal: besides what JSON itself escapes, C1
/// controls, bidirectional controls, zero-width characters and the Unicode line separators
/// are written as `\uXXXX`, so text from outside cannot act on the terminal or reorder
/// what is shown, and still reads back as the same string.
pub fn write_json<W: Write>(out: W, v: &Value, pretty: bool) -> serde_json::Result<()> {
    use serde::Serialize;
    if pretty {
        let f = TerminalSafe(serde_json::ser::PrettyFormatter::new());
        v.serialize(&mut serde_json::Serializer::with_formatter(out, f))
    } else {
        let f = TerminalSafe(serde_json::ser::CompactFormatter);
        v.serialize(&mut serde_json::Serializer::with_formatter(out, f))
    }
}

/// Characters written as `\uXXXX` inside JSON strings although JSON does not require it.
fn escaped_in_json(c: char) -> bool {
    matches!(c, '\u{80}'..='\u{9F}' | '\u{2028}' | '\u{2029}') || crate::untrusted::is_invisible(c)
}

/// A JSON formatter that lays out as `F` does and escapes [`escaped_in_json`] characters.
struct TerminalSafe<F>(F);

impl<F: serde_json::ser::Formatter> serde_json::ser::Formatter for TerminalSafe<F> {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut rest = fragment;
        while let Some((at, c)) = rest.char_indices().find(|(_, c)| escaped_in_json(*c)) {
            w.write_all(&rest.as_bytes()[..at])?;
            // Every escaped character is in the Basic Multilingual Plane: one \u escape.
            write!(w, "\\u{:04x}", u32::from(c))?;
            rest = &rest[at + c.len_utf8()..];
        }
        w.write_all(rest.as_bytes())
    }

    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn end_object_key<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object_key(w)
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object_value(w)
    }
}

fn steps_json(steps: &[&StepRow]) -> Value {
    Value::Array(
        steps
            .iter()
            .map(|s| {
                json!({"name": s.step, "status": s.status, "attempts": s.attempts,
                       "started_at": s.started_at, "finished_at": s.finished_at, "error": s.error})
            })
            .collect(),
    )
}

pub fn request_json(r: &RequestRow, steps: &[StepRow], deps: &[String]) -> Value {
    let steps: Vec<&StepRow> = steps.iter().filter(|s| s.request_id == r.id).collect();
    json!({
        "id": r.id, "state": r.state, "tenant": r.tenant, "region": r.region, "plan": r.plan,
        "label": r.label, "domain": r.domain, "cluster": r.cluster, "requested_by": r.requested_by,
        "steps": steps_json(&steps), "depends_on": deps, "error": r.error, "wait_reason": r.wait_reason,
        "needs_attention": r.needs_attention, "teardown": r.teardown,
        "approval": r.approval_rule.as_ref().map(|rule| json!({"rule": rule, "version": r.approval_rule_version, "reason": r.approval_reason})),
        "waiting_for": r.why_waiting(),
        "resources": {"cpu": r.cpu, "memory_gb": r.memory_gb, "storage_gb": r.storage_gb},
        "created_at": r.created_at, "updated_at": r.updated_at,
        "operation": r.operation, "target": r.target, "from_plan": r.from_plan,
    })
}

/// The plan as a list shows it: a resize's as "from→to".
fn plan_cell(r: &RequestRow) -> String {
    match (&r.target, &r.from_plan) {
        (Some(_), Some(from)) => format!("{}→{}", clean(from), clean(&r.plan)),
        _ => clean(&r.plan),
    }
}

fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let n = cells.len();
        cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                if i + 1 == n {
                    c
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push('\n');
        out.push_str(line(row).trim_end());
    }
    out
}

fn ago(now: DateTime<Utc>, ts: &str) -> String {
    parse_ts(ts)
        .map(|t| age(now, t))
        .unwrap_or_else(|| "?".into())
}

fn clean(s: &str) -> String {
    sanitize(s).into_owned()
}

pub async fn request_list(
    store: &Store,
    rows: &[RequestRow],
    as_json: bool,
    now: DateTime<Utc>,
) -> Result<()> {
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let steps = store.steps_of(&ids).await?;
    if as_json {
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let deps = store.deps_of(&r.id).await?;
            out.push(request_json(r, &steps, &deps));
        }
        return print_json(&Value::Array(out));
    }
    let body = rows
        .iter()
        .map(|r| {
            let done = steps
                .iter()
                .filter(|s| s.request_id == r.id && s.status == "done")
                .count();
            let note = r.error.clone().or(r.why_waiting()).unwrap_or_default();
            vec![
                short(&r.id).to_string(),
                r.state.clone(),
                clean(&r.tenant),
                clean(&r.region),
                plan_cell(r),
                clean(&r.label),
                format!("{done}/{}", r.operation().steps().len()),
                ago(now, &r.created_at),
                clean(&note),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &["ID", "STATE", "TENANT", "REGION", "PLAN", "LABEL", "STEPS", "AGE", "NOTE"],
            body
        )
    );
    Ok(())
}

pub fn request_show(d: &RequestDetail, as_json: bool, now: DateTime<Utc>) -> Result<()> {
    let r = &d.request;
    if as_json {
        let mut v = request_json(r, &d.steps, &d.depends_on);
        v["tasks"] = serde_json::to_value(&d.tasks)?;
        v["transitions"] = serde_json::to_value(&d.transitions)?;
        v["resources_held"] = serde_json::to_value(&d.resources)?;
        v["events"] = Value::Array(d.events.iter().map(event_json).collect());
        v["node"] = serde_json::to_value(&d.node)?;
        v["records"] = serde_json::to_value(&d.records)?;
        v["certificates"] = serde_json::to_value(&d.certificates)?;
        return print_json(&v);
    }
    println!(
        "request {}  {}  ({} ago)",
        r.id,
        r.state,
        ago(now, &r.created_at)
    );
    println!(
        "  tenant {}  region {}  plan {}  label {}",
        clean(&r.tenant),
        clean(&r.region),
        clean(&r.plan),
        clean(&r.label)
    );
    if let Some(c) = &r.cluster {
        println!("  cluster {}", clean(c));
    }
    if let Some(target) = &r.target {
        println!(
            "  resize of node {} (made by request {}): {}",
            clean(&r.label),
            short(target),
            plan_cell(r)
        );
    }
    println!("  requested by {}", clean(&r.requested_by));
    if let Some(rule) = &r.approval_rule {
        let version = r
            .approval_rule_version
            .map(|v| format!(" [rule version {v}]"))
            .unwrap_or_default();
        println!(
            "  approval: {}{version}",
            clean(r.approval_reason.as_deref().unwrap_or(rule))
        );
    }
    if let Some(w) = r.why_waiting() {
        println!("  waiting: {}", clean(&w));
    }
    if let Some(e) = &r.error {
        println!("  error: {}", clean(e));
    }
    if r.needs_attention {
        println!("  NEEDS ATTENTION: a compensation could not finish; it is retried periodically");
    }
    if !d.depends_on.is_empty() {
        println!(
            "  depends on {}",
            d.depends_on
                .iter()
                .map(|i| short(i))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!("steps:");
    for s in &d.steps {
        println!("  {:<10} {:<8} attempts {}", s.step, s.status, s.attempts);
        for t in d.tasks.iter().filter(|t| t.step == s.step) {
            println!(
                "    {:<18} {:<8} {}",
                t.name,
                t.status,
                clean(t.detail.as_deref().unwrap_or(""))
            );
        }
    }
    println!("transitions:");
    for t in &d.transitions {
        println!(
            "  {}  {} → {}  by {}{}",
            t.at,
            t.from_state.as_deref().unwrap_or("∅"),
            t.to_state,
            clean(&t.actor),
            t.reason
                .as_deref()
                .map(|r| format!(": {}", clean(r)))
                .unwrap_or_default()
        );
    }
    println!("resources:");
    for res in &d.resources {
        println!(
            "  {:<9} {:<9} {}  {}",
            res.kind,
            res.status,
            clean(res.provider_ref.as_deref().unwrap_or("-")),
            clean(res.detail.as_deref().unwrap_or(""))
        );
    }
    if !d.records.is_empty() {
        println!("dns records:");
        for rec in &d.records {
            println!(
                "  {:<9} {:<12} {:<5} {}  {}{}",
                rec.status,
                rec.purpose,
                rec.rtype,
                clean(&rec.name),
                clean(&rec.want),
                if rec.owned {
                    ""
                } else {
                    "  (was there already)"
                }
            );
        }
    }
    for c in &d.certificates {
        println!(
            "certificate {}  {}  {}  valid until {} ({}){}",
            c.status,
            clean(&c.names.join(",")),
            clean(&c.issuer),
            c.not_after,
            expiry_words(now, &c.not_after),
            c.fate()
                .iter()
                .map(|f| format!("  {}", clean(f)))
                .collect::<String>()
        );
    }
    println!("events: {}", d.events.len());
    for e in &d.events {
        println!("  {}  {}", e.at, e.name);
    }
    Ok(())
}

pub fn node_list(rows: &[NodeRow], as_json: bool, now: DateTime<Utc>) -> Result<()> {
    if as_json {
        return print_json(&serde_json::to_value(rows)?);
    }
    let body = rows
        .iter()
        .map(|n| {
            vec![
                short(&n.id).to_string(),
                clean(&n.label),
                clean(n.ip_address.as_deref().unwrap_or("-")),
                clean(&n.region),
                clean(&n.tenant),
                n.status.clone(),
                n.reputation_score.to_string(),
                n.last_heartbeat
                    .as_deref()
                    .map(|t| ago(now, t))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "ID",
                "LABEL",
                "IP",
                "REGION",
                "TENANT",
                "STATUS",
                "REP",
                "HEARTBEAT"
            ],
            body
        )
    );
    Ok(())
}

pub fn node_show(
    n: &NodeRow,
    warmup: Option<&crate::store::WarmupState>,
    transitions: &[crate::store::NodeTransitionRow],
    resizes: &[RequestRow],
    as_json: bool,
) -> Result<()> {
    if as_json {
        let mut v = serde_json::to_value(n)?;
        v["transitions"] = serde_json::to_value(transitions)?;
        v["resizes"] = Value::Array(
            resizes
                .iter()
                .map(|r| {
                    json!({"id": r.id, "state": r.state, "from_plan": r.from_plan, "plan": r.plan,
                           "requested_by": r.requested_by, "created_at": r.created_at, "error": r.error})
                })
                .collect(),
        );
        v["warmup"] = match warmup {
            Some(w) => json!({"plan": w.plan, "day": w.day, "days": w.days, "cap": w.cap,
                "status": w.status, "reason": w.reason}),
            None => Value::Null,
        };
        return print_json(&v);
    }
    println!("node {}  {}  {}", n.id, clean(&n.label), n.status);
    println!(
        "  hostname {}  ip {}",
        clean(&n.hostname),
        clean(n.ip_address.as_deref().unwrap_or("-"))
    );
    println!(
        "  tenant {}  region {}  plan {}",
        clean(&n.tenant),
        clean(&n.region),
        clean(&n.plan)
    );
    if let Some(r) = &n.status_reason {
        println!("  reason: {}", clean(r));
    }
    if let Some(req) = &n.request_id {
        println!("  request {}", req);
    }
    if let Some(w) = warmup {
        println!(
            "  warm-up {}: day {}/{}  cap {}/day  {}{}",
            clean(&w.plan),
            w.day,
            w.days,
            w.cap,
            w.status,
            w.reason
                .as_deref()
                .map(|r| format!(": {}", clean(r)))
                .unwrap_or_default()
        );
    }
    if !transitions.is_empty() {
        println!("  transitions:");
        for t in transitions {
            let from = t.from.as_deref().map(clean).unwrap_or_else(|| "-".into());
            let cause = t
                .cause
                .as_deref()
                .map(|c| format!(" ({})", clean(c)))
                .unwrap_or_default();
            println!(
                "    {}  {from} → {}{cause}  by {}: {}",
                clean(&t.at),
                clean(&t.to),
                clean(&t.actor),
                clean(&t.reason)
            );
        }
    }
    if !resizes.is_empty() {
        println!("  resizes:");
        for r in resizes {
            println!(
                "    {}  {}  {}  {}  by {}{}",
                clean(&r.created_at),
                short(&r.id),
                plan_cell(r),
                r.state,
                clean(&r.requested_by),
                r.error
                    .as_deref()
                    .map(|e| format!(": {}", clean(e)))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// A node's warm-up daily log.
pub fn warmup_log(label: &str, w: &crate::store::WarmupState, as_json: bool) -> Result<()> {
    if as_json {
        return print_json(&serde_json::to_value(w)?);
    }
    println!(
        "{}: {} day {}/{}, cap {}/day, {}",
        clean(label),
        clean(&w.plan),
        w.day,
        w.days,
        w.cap,
        w.status
    );
    let pct = |n: i64, of: i64| {
        if of == 0 {
            "-".to_string()
        } else {
            format!("{:.2}%", n as f64 * 100.0 / of as f64)
        }
    };
    let body = w
        .log
        .iter()
        .map(|d| {
            vec![
                d.date.clone(),
                d.day.to_string(),
                d.cap.to_string(),
                d.sent.to_string(),
                pct(d.bounced, d.sent),
                pct(d.deferred, d.sent),
                pct(d.complaints, d.sent),
                d.decision.clone().unwrap_or_else(|| "-".into()),
                clean(d.reason.as_deref().unwrap_or("")),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "DATE",
                "DAY",
                "CAP",
                "SENT",
                "BOUNCE",
                "DEFER",
                "COMPLAINT",
                "DECISION",
                "WHY"
            ],
            body
        )
    );
    Ok(())
}

pub fn warmup_plans(plans: &[crate::domain::warmup::WarmupPlan], default: &str) -> Result<()> {
    let body = plans
        .iter()
        .map(|p| {
            vec![
                format!(
                    "{}{}",
                    clean(&p.name),
                    if p.name == default { " *" } else { "" }
                ),
                p.days().to_string(),
                p.cap(1).to_string(),
                p.cap(p.days()).to_string(),
                clean(&p.description),
            ]
        })
        .collect();
    println!(
        "{}",
        table(&["PLAN", "DAYS", "DAY 1", "LAST DAY", "DESCRIPTION"], body)
    );
    println!("* new nodes start on this plan ([warmup] default_plan)");
    Ok(())
}

pub fn event_json(e: &EventRow) -> Value {
    let payload: Value =
        serde_json::from_str(&e.payload).unwrap_or(Value::String(e.payload.clone()));
    json!({"seq": e.seq, "id": e.id, "name": e.name, "at": e.at, "request_id": e.request_id,
           "node_id": e.node_id, "tenant": e.tenant, "actor": e.actor, "payload": payload})
}

fn print_event(e: &EventRow, as_json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if as_json {
        write_json(&mut out, &event_json(e), false)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{}  {:<28} {}  {}  by {}",
            e.at,
            e.name,
            e.request_id.as_deref().map(short).unwrap_or("-"),
            clean(e.tenant.as_deref().unwrap_or("-")),
            clean(&e.actor)
        )?;
    }
    out.flush()?;
    Ok(())
}

pub async fn events(store: &Store, filter: EventFilter, follow: bool, as_json: bool) -> Result<()> {
    let mut first = store.list_events(&filter).await?;
    first.reverse();
    let mut last = first.last().map(|e| e.seq).unwrap_or(0);
    for e in &first {
        print_event(e, as_json)?;
    }
    if !follow {
        return Ok(());
    }
    if first.is_empty() {
        // Start after whatever exists now, so following shows only what comes next.
        let newest = store
            .list_events(&EventFilter {
                limit: 1,
                ..Default::default()
            })
            .await?;
        last = newest.first().map(|e| e.seq).unwrap_or(0);
    }
    loop {
        let next = store
            .list_events(&EventFilter {
                after: Some(last),
                limit: 500,
                ..filter.clone()
            })
            .await?;
        for e in &next {
            print_event(e, as_json)?;
            last = e.seq;
        }
        if next.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(300)) => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
    }
}

pub fn reconcile(report: &Report, as_json: bool) -> Result<()> {
    if as_json {
        return print_json(&serde_json::to_value(report)?);
    }
    if report.orphans.is_empty() && report.missing.is_empty() {
        println!("provider inventory and store agree: no orphans, nothing missing");
    }
    for o in &report.orphans {
        println!(
            "orphan   {} {} {} {} (created for {})",
            o.provider,
            o.instance_id,
            o.label,
            o.ip.as_deref().unwrap_or("-"),
            o.idempotency_key.as_deref().map(short).unwrap_or("?")
        );
    }
    for m in &report.missing {
        println!(
            "missing  {} held by request {} ({})",
            m.instance_id,
            short(&m.request_id),
            m.request_state
        );
    }
    for c in &report.challenges_removed {
        println!(
            "removed  {} leftover challenge record(s) at {} in {} (request {})",
            c.records,
            sanitize(&c.name),
            sanitize(&c.zone),
            short(&c.request_id)
        );
    }
    for c in &report.challenges_left {
        println!(
            "left     {} leftover challenge record(s) at {} in {} (request {}; --read-only)",
            c.records,
            sanitize(&c.name),
            sanitize(&c.zone),
            short(&c.request_id)
        );
    }
    if let Some(why) = &report.challenges_not_checked {
        println!("challenge records not checked: {}", sanitize(why));
    }
    for c in &report.challenges_failed {
        println!(
            "failed   to clear challenge records at {} in {} (request {}): {}",
            sanitize(&c.name),
            sanitize(&c.zone),
            short(&c.request_id),
            sanitize(&c.error)
        );
    }
    Ok(())
}

/// "used/limit" for one dimension.
fn of(used: i64, limit: i64) -> String {
    format!("{used}/{limit}")
}

pub fn tenant_list(list: &[crate::engine::clusters::TenantStatus], as_json: bool) -> Result<()> {
    if as_json {
        return print_json(&serde_json::to_value(list)?);
    }
    let body = list
        .iter()
        .map(|t| {
            vec![
                clean(&t.name),
                of(t.used.units, t.limit.units),
                of(t.used.cpu, t.limit.cpu),
                of(t.used.memory_gb, t.limit.memory_gb),
                of(t.used.storage_gb, t.limit.storage_gb),
                if t.approvers.is_empty() {
                    "-".to_string()
                } else {
                    clean(&t.approvers.join(","))
                },
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "TENANT",
                "NODES",
                "CPU",
                "MEMORY GB",
                "STORAGE GB",
                "APPROVERS"
            ],
            body
        )
    );
    Ok(())
}

pub fn cluster_list(list: &[crate::engine::clusters::ClusterStatus], as_json: bool) -> Result<()> {
    if as_json {
        return print_json(&serde_json::to_value(list)?);
    }
    let body = list
        .iter()
        .map(|c| {
            vec![
                clean(&c.name),
                clean(&c.provider),
                clean(&c.region),
                if c.default { "yes" } else { "" }.to_string(),
                serde_json::to_value(c.health)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                of(c.used.units, c.capacity.units),
                of(c.used.cpu, c.capacity.cpu),
                of(c.used.memory_gb, c.capacity.memory_gb),
                of(c.used.storage_gb, c.capacity.storage_gb),
                circuit_cell(&c.circuit),
                c.max_in_flight.to_string(),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "CLUSTER",
                "PROVIDER",
                "REGION",
                "DEFAULT",
                "HEALTH",
                "SLOTS",
                "CPU",
                "MEMORY GB",
                "STORAGE GB",
                "CIRCUIT",
                "MAX CALLS"
            ],
            body
        )
    );
    // An open circuit's last error, under the table: too long for a cell.
    for c in list.iter().filter(|c| c.circuit.state == "open") {
        if let Some(e) = &c.circuit.last_error {
            println!(
                "{}: {} circuit open: last error: {}",
                clean(&c.name),
                clean(&c.provider),
                clean(e)
            );
        }
    }
    Ok(())
}

/// `closed`, or `open (5 failures, probe 12:00:31)`.
fn circuit_cell(c: &crate::engine::clusters::Circuit) -> String {
    if c.state != "open" {
        return clean(&c.state);
    }
    let probe = c
        .retry_at
        .as_deref()
        .and_then(crate::clock::parse_ts)
        .map(|t| format!(", probe {}", t.format("%H:%M:%S")))
        .unwrap_or_default();
    format!("open ({} failures{probe})", c.failures)
}

pub fn zone_list(zones: &[crate::reputation::dnsbl::Zone], as_json: bool) -> Result<()> {
    if as_json {
        return print_json(&serde_json::to_value(zones)?);
    }
    let body = zones
        .iter()
        .map(|z| {
            vec![
                clean(&z.zone),
                z.severity.as_str().to_string(),
                match z.codes {
                    crate::reputation::dnsbl::Codes::Spamhaus => "spamhaus",
                    crate::reputation::dnsbl::Codes::Generic => "generic",
                }
                .to_string(),
            ]
        })
        .collect();
    println!("{}", table(&["ZONE", "SEVERITY", "CODES"], body));
    Ok(())
}

pub fn verdicts(list: &[crate::reputation::dnsbl::Verdict], as_json: bool) -> Result<()> {
    if as_json {
        return print_json(&serde_json::to_value(list)?);
    }
    let body = list
        .iter()
        .map(|v| {
            vec![
                v.ip.to_string(),
                clean(&v.zone),
                v.status.as_str().to_string(),
                v.code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                clean(v.meaning.as_deref().unwrap_or("")),
                clean(v.reason.as_deref().unwrap_or("")),
            ]
        })
        .collect();
    println!(
        "{}",
        table(&["IP", "ZONE", "STATUS", "CODE", "MEANING", "REASON"], body)
    );
    Ok(())
}

pub fn alert_list(
    list: &[crate::store::AlertRow],
    as_json: bool,
    now: DateTime<Utc>,
) -> Result<()> {
    if as_json {
        return print_json(&serde_json::to_value(list)?);
    }
    // Open before resolved, the worst first, the longest open first: what to look at.
    let rank = |a: &crate::store::AlertRow| crate::tui::table::severity_rank(Some(&a.severity));
    let mut order: Vec<&crate::store::AlertRow> = list.iter().collect();
    order.sort_by(|a, b| {
        (a.resolved_at.is_some(), rank(a), &a.raised_at).cmp(&(
            b.resolved_at.is_some(),
            rank(b),
            &b.raised_at,
        ))
    });
    let at = crate::clock::ts(now);
    let body = order
        .iter()
        .map(|a| {
            let state = match a.state_at(&at) {
                "resolved" => format!(
                    "resolved {} ago",
                    ago(now, a.resolved_at.as_deref().unwrap_or(""))
                ),
                "silenced" => format!(
                    "silenced by {}",
                    clean(a.silenced_by.as_deref().unwrap_or("?"))
                ),
                "acked" => format!("acked by {}", clean(a.acked_by.as_deref().unwrap_or("?"))),
                other => other.to_string(),
            };
            vec![
                crate::domain::ids::short(&a.id).to_string(),
                a.severity.to_uppercase(),
                ago(now, &a.raised_at),
                state,
                clean(&a.kind),
                clean(&a.message),
            ]
        })
        .collect();
    println!(
        "{}",
        table(&["ID", "SEVERITY", "RAISED", "STATE", "KIND", "WHAT"], body)
    );
    Ok(())
}

/// "in 89 days", "expired 3 days ago".
pub fn expiry_words(now: DateTime<Utc>, not_after: &str) -> String {
    match DateTime::parse_from_rfc3339(not_after) {
        Ok(t) => {
            let days = (t.with_timezone(&Utc) - now).num_days();
            if days >= 0 {
                format!("in {days} days")
            } else {
                format!("expired {} days ago", -days)
            }
        }
        Err(_) => "unknown".into(),
    }
}

/// `mailfleet tls status`: every active certificate, soonest expiry first.
pub fn cert_list(
    rows: &[crate::store::CertRow],
    as_json: bool,
    now: DateTime<Utc>,
    renew_days: i64,
) -> Result<()> {
    if as_json {
        let v: Vec<Value> = rows
            .iter()
            .map(|c| {
                let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
                let due = DateTime::parse_from_rfc3339(&c.not_after)
                    .map(|t| (t.with_timezone(&Utc) - now).num_days() <= renew_days)
                    .unwrap_or(false);
                v["renewal_due"] = Value::Bool(due);
                v["renewing"] = Value::Bool(c.renewing(now));
                v
            })
            .collect();
        return print_json(&Value::Array(v));
    }
    if rows.is_empty() {
        println!("no certificates");
        return Ok(());
    }
    println!(
        "{:<36} {:<10} {:<22} {:<18} ISSUER",
        "HOSTNAME", "NODE", "EXPIRES", "WHEN"
    );
    for c in rows {
        let mut when = expiry_words(now, &c.not_after);
        if c.renewing(now) {
            when.push_str("; renewing now");
        }
        if let Some(e) = &c.renew_error {
            when.push_str(&format!("; renewal failed: {}", clean(e)));
        }
        println!(
            "{:<36} {:<10} {:<22} {:<18} {}",
            clean(&c.hostname),
            c.node_id.as_deref().map(short).unwrap_or("-"),
            c.not_after.get(..19).unwrap_or(&c.not_after),
            when,
            clean(&c.issuer)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(v: &Value, pretty: bool) -> String {
        let mut out = Vec::new();
        write_json(&mut out, v, pretty).expect("write");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn json_is_laid_out_as_serde_json_lays_it_out() {
        let v = json!({"a": [1, {"b": "plain ü 🚀"}], "c": null, "d": []});
        assert_eq!(
            written(&v, true),
            serde_json::to_string_pretty(&v).expect("json")
        );
        assert_eq!(written(&v, false), serde_json::to_string(&v).expect("json"));
    }

    #[test]
    fn terminal_tricks_are_escaped_and_read_back() {
        let text = "a\u{9b}b\u{202e}c\u{2066}d\u{200b}e\u{2028}f\u{feff}g\"\n";
        let v = json!({ text: text });
        let out = written(&v, false);
        assert_eq!(
            out,
            r#"{"a\u009bb\u202ec\u2066d\u200be\u2028f\ufeffg\"\n":"a\u009bb\u202ec\u2066d\u200be\u2028f\ufeffg\"\n"}"#
        );
        let back: Value = serde_json::from_str(&out).expect("parses");
        assert_eq!(back, v);
    }
}
