//! The demo database's SQL: the `('demo', 'true')` mark, and bulk inserts of the rows that
//! `crate::demo` generates. A batch is written in one transaction with cached statements;
//! rows go in the order the foreign keys need (requests before what refers to them, nodes
//! before their warm-up).

use super::{Conn, Store, StoreError};
use crate::demo::DemoBatch;
use crate::store::sql::{params, OptionalExtension};

const DEMO_KEY: &str = "demo";

fn demo_flag(conn: &Conn) -> Result<bool, StoreError> {
    let has_meta: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
        )?
        .query_row([], |r| r.get(0))?;
    if has_meta == 0 {
        return Ok(false);
    }
    let value: Option<String> = conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?")?
        .query_row([DEMO_KEY], |r| r.get(0))
        .optional()?;
    Ok(value.as_deref() == Some("true"))
}

impl Store {
    /// Whether this database was made by `mailfleet demo` (meta holds `('demo', 'true')`).
    pub async fn is_demo(&self) -> Result<bool, StoreError> {
        self.read(demo_flag).await
    }

    /// Marks this database as a demo one, which `mailfleet demo` may overwrite.
    pub async fn mark_demo(&self) -> Result<(), StoreError> {
        self.write(|conn| {
            conn.prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?, 'true')
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute([DEMO_KEY])?;
            Ok(())
        })
        .await
    }

    /// Whether the database holds no request yet.
    pub(crate) async fn demo_is_empty(&self) -> Result<bool, StoreError> {
        self.read(|c| {
            let any: i64 = c
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM requests)")?
                .query_row([], |r| r.get(0))?;
            Ok(any == 0)
        })
        .await
    }

    /// Sets the writer's page cache (SQLite's `cache_size`: pages if positive, KiB if
    /// negative) and returns the previous setting. A large cache keeps bulk inserts into
    /// big indexes off the disk.
    pub(crate) async fn demo_cache_size(&self, size: i64) -> Result<i64, StoreError> {
        self.write(move |conn| {
            // PostgreSQL sizes its buffers for the whole server, not per connection.
            let Some(lite) = conn.sqlite() else {
                return Ok(size);
            };
            let before: i64 = lite.query_row("PRAGMA cache_size", [], |r| r.get(0))?;
            lite.pragma_update(None, "cache_size", size)?;
            Ok(before)
        })
        .await
    }

    /// Writes one batch of generated rows in one transaction.
    pub(crate) async fn demo_insert_batch(&self, batch: DemoBatch) -> Result<(), StoreError> {
        self.write(move |conn| insert_batch(conn, &batch)).await
    }
}

fn insert_batch(conn: &Conn, b: &DemoBatch) -> Result<(), StoreError> {
    if !b.requests.is_empty() {
        let mut st = conn.prepare_cached(
            "INSERT INTO requests (id, tenant, region, plan, kind, cpu, memory_gb, storage_gb, label, domain,
                state, requested_by, cluster, approval_rule, approval_reason, wait_reason, teardown, error,
                needs_attention, fence, next_run_at, progress_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
                ?20, ?21, ?22, ?23, ?24)",
        )?;
        for r in &b.requests {
            st.execute(params![
                r.id,
                r.tenant,
                r.region,
                r.plan,
                r.kind,
                r.cpu,
                r.memory_gb,
                r.storage_gb,
                r.label,
                r.domain,
                r.state,
                r.requested_by,
                r.cluster,
                r.approval_rule,
                r.approval_reason,
                r.wait_reason,
                r.teardown,
                r.error,
                r.needs_attention,
                r.fence,
                r.next_run_at,
                r.progress_at,
                r.created_at,
                r.updated_at
            ])?;
        }
    }
    if !b.deps.is_empty() {
        let mut st =
            conn.prepare_cached("INSERT INTO request_deps (request_id, depends_on) VALUES (?, ?)")?;
        for (request, prerequisite) in &b.deps {
            st.execute(params![request, prerequisite])?;
        }
    }
    if !b.steps.is_empty() {
        let mut st = conn.prepare_cached(
            "INSERT INTO request_steps (request_id, step, position, status, attempts, started_at, finished_at, error)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )?;
        for s in &b.steps {
            st.execute(params![
                s.request_id,
                s.step,
                s.position,
                s.status,
                s.attempts,
                s.started_at,
                s.finished_at,
                s.error
            ])?;
        }
    }
    if !b.tasks.is_empty() {
        let mut st = conn.prepare_cached(
            "INSERT INTO step_tasks (request_id, step, name, position, status, detail, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )?;
        for t in &b.tasks {
            st.execute(params![
                t.request_id,
                t.step,
                t.name,
                t.position,
                t.status,
                t.detail,
                t.updated_at
            ])?;
        }
    }
    if !b.resources.is_empty() {
        let mut st = conn.prepare_cached(
            "INSERT INTO resources (id, request_id, seq, kind, status, provider, provider_ref, tenant, cluster,
                cpu, memory_gb, storage_gb, slots, detail, created_at, released_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )?;
        for r in &b.resources {
            st.execute(params![
                r.id,
                r.request_id,
                r.seq,
                r.kind,
                r.status,
                r.provider,
                r.provider_ref,
                r.tenant,
                r.cluster,
                r.cpu,
                r.memory_gb,
                r.storage_gb,
                r.slots,
                r.detail,
                r.created_at,
                r.released_at
            ])?;
        }
    }
    if !b.nodes.is_empty() {
        let mut st = conn.prepare_cached(
            "INSERT INTO nodes (id, request_id, provider_id, tenant, label, hostname, ip_address, region, cluster,
                plan, status, status_reason, resume_status, reputation_score, current_load, created_at,
                updated_at, last_heartbeat, cert_not_after)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )?;
        for n in &b.nodes {
            st.execute(params![
                n.id,
                n.request_id,
                n.provider_id,
                n.tenant,
                n.label,
                n.hostname,
                n.ip_address,
                n.region,
                n.cluster,
                n.plan,
                n.status,
                n.status_reason,
                n.resume_status,
                n.reputation_score,
                n.current_load,
                n.created_at,
                n.updated_at,
                n.last_heartbeat,
                n.cert_not_after
            ])?;
        }
        // Each node's history as `node show` lists it: registered, then where it is now.
        let mut st = conn.prepare_cached(
            "INSERT INTO node_transitions (node_id, at, from_status, to_status, cause, actor, reason)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )?;
        for n in &b.nodes {
            st.execute(params![
                n.id,
                n.created_at,
                "provisioning",
                "warming",
                None::<&str>,
                "engine",
                "registered by the activate step"
            ])?;
            if n.status != "warming" {
                st.execute(params![
                    n.id,
                    n.updated_at,
                    n.resume_status,
                    n.status,
                    None::<&str>,
                    "engine",
                    n.status_reason.as_deref().unwrap_or("demo history")
                ])?;
            }
        }
    }
    if !b.node_warmup.is_empty() {
        let mut st = conn.prepare_cached(
            "INSERT INTO node_warmup (node_id, plan, day, days, cap, status, reason, started_at,
                day_started_at, updated_at, day_date)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, substr(?9, 1, 10))",
        )?;
        for w in &b.node_warmup {
            st.execute(params![
                w.node_id,
                w.plan,
                w.day,
                w.days,
                w.cap,
                w.status,
                w.reason,
                w.started_at,
                w.day_started_at,
                w.updated_at
            ])?;
        }
    }
    if !b.warmup_days.is_empty() {
        let mut st = conn.prepare_cached(
            "INSERT INTO warmup_days (node_id, date, day, cap, scheduled, sent, delivered, deferred,
                bounced, complaints, decision, reason)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )?;
        for d in &b.warmup_days {
            st.execute(params![
                d.node_id,
                d.date,
                d.day,
                d.cap,
                d.scheduled,
                d.sent,
                d.delivered,
                d.deferred,
                d.bounced,
                d.complaints,
                d.decision,
                d.reason
            ])?;
        }
    }
    if !b.sims.is_empty() {
        let mut st = conn.prepare_cached(
            "INSERT INTO sim_instances (id, idempotency_key, cluster, region, label, plan, cpu, memory_gb,
                storage_gb, ip, power, firewall, rdns, mail_stack, ready_at, created_at, updated_at, deleted_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )?;
        for s in &b.sims {
            st.execute(params![
                s.id,
                s.idempotency_key,
                s.cluster,
                s.region,
                s.label,
                s.plan,
                s.cpu,
                s.memory_gb,
                s.storage_gb,
                s.ip,
                s.power,
                s.firewall,
                s.rdns,
                s.mail_stack,
                s.ready_at,
                s.created_at,
                s.updated_at,
                s.deleted_at
            ])?;
        }
    }
    if !b.dns_records.is_empty() {
        let mut st = conn.prepare_cached(
            "INSERT INTO dns_records (request_id, position, zone, purpose, name, rtype, ttl, content, want, provider,
                owned, status, seen, published_at, verified_at, removed_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'sim', ?, ?, ?, ?, ?, ?)",
        )?;
        for r in &b.dns_records {
            st.execute(params![
                r.request_id,
                r.position,
                r.zone,
                r.purpose,
                r.name,
                r.rtype,
                r.ttl,
                r.content,
                r.want,
                r.owned,
                r.status,
                r.seen,
                r.published_at,
                r.verified_at,
                r.removed_at
            ])?;
        }
    }
    for c in &b.certs {
        super::certs::insert_demo(conn, c)?;
    }
    if !b.sim_dns.is_empty() {
        // A domain's shared records come once per node of it: kept once.
        let mut st = conn.prepare_cached(
            "INSERT INTO sim_dns_records (zone, name, rtype, ttl, content, created_at) VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT DO NOTHING",
        )?;
        for r in &b.sim_dns {
            st.execute(params![
                r.zone,
                r.name,
                r.rtype,
                r.ttl,
                r.content,
                r.created_at
            ])?;
        }
    }
    if !b.listings.is_empty() {
        let mut st = conn.prepare_cached(
            "INSERT INTO ip_blacklist_events (id, node_id, ip_address, blacklist_provider, code, meaning,
                listed_at, delisted_at, details, severity)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )?;
        // The demo's zones are among the built-in ones; their severity comes from there.
        let severity = |zone: &str| {
            crate::config::builtin_zones()
                .iter()
                .find(|z| z.zone == zone)
                .map(|z| z.severity.as_str())
                .unwrap_or("medium")
        };
        for l in &b.listings {
            st.execute(params![
                l.id,
                l.node_id,
                l.ip_address,
                l.provider,
                l.code,
                l.meaning,
                l.listed_at,
                l.delisted_at,
                l.details,
                severity(l.provider)
            ])?;
            // The alert the monitor would have raised for it (resolved when delisted).
            let open = l.delisted_at.is_none();
            let subject = if open {
                format!("node:{}:{}", l.node_id, l.provider)
            } else {
                format!("node:{}:{}:{}", l.node_id, l.provider, l.id)
            };
            let what = l.meaning;
            conn.prepare_cached(
                "INSERT OR IGNORE INTO alerts (id, severity, kind, subject, node_id, message, raised_at, resolved_at, resolution)
                 SELECT ?1, ?2, 'blocklist', ?3, ?4, n.label || ' ' || ?5 || ' is listed on ' || ?6 || ' (' || ?7 || ')',
                        ?8, ?9, ?10
                 FROM nodes n WHERE n.id = ?4",
            )?
            .execute(params![
                format!("al-{}", l.id),
                if severity(l.provider) == "high" { "high" } else { "medium" },
                subject,
                l.node_id,
                l.ip_address,
                l.provider,
                what,
                l.listed_at,
                l.delisted_at,
                if open { None } else { Some("delisted") }
            ])?;
        }
    }
    if !b.transitions.is_empty() {
        let mut st = conn.prepare_cached(
            "INSERT INTO transitions (request_id, from_state, to_state, actor, reason, at)
             VALUES (?, ?, ?, ?, ?, ?)",
        )?;
        for t in &b.transitions {
            st.execute(params![t.request_id, t.from, t.to, t.actor, t.reason, t.at])?;
        }
    }
    if !b.events.is_empty() {
        let mut st = conn.prepare_cached(
            "INSERT INTO events (id, name, request_id, node_id, tenant, actor, payload, at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )?;
        for e in &b.events {
            st.execute(params![
                e.id,
                e.name,
                e.request_id,
                e.node_id,
                e.tenant,
                e.actor,
                e.payload,
                e.at
            ])?;
        }
    }
    if !b.audit.is_empty() {
        let mut st = conn.prepare_cached(
            "INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
        )?;
        for a in &b.audit {
            st.execute(params![a.at, a.actor, a.action, a.target, a.detail])?;
        }
    }
    Ok(())
}
