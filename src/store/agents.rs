//! Agents and their heartbeats: each node's token (kept like DKIM keys), its reports
//! accepted once each in sequence order, and the health check that marks a node whose
//! agent has gone quiet unhealthy (and back when it speaks again).

use super::nodes::transition;
use super::reputation::{raise_alert, resolve_alert};
use super::{Store, StoreError};
use crate::agent::report::Report;
use crate::clock::ts;
use crate::domain::node::NodeEvent;
use crate::reputation::dnsbl::Severity;
use crate::store::sql::{params, OptionalExtension};
use chrono::{DateTime, Utc};

/// A node's agent token as kept: sealed, or in a file (recorded path).
#[derive(Debug, Clone)]
pub struct KeptToken {
    pub sealed: Option<Vec<u8>>,
    pub file: Option<String>,
    pub last_seq: u64,
    /// When it was issued: which token it is.
    pub issued_at: String,
}

/// What became of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Recorded as the node's heartbeat; `recovered` when it brought an unhealthy node back.
    Recorded { node_id: String, recovered: bool },
    /// Its sequence number is not above the last one accepted: a replay (or a report sent
    /// twice), not written.
    Replay { last_seq: u64 },
    /// No live node has this agent's request yet (it is still being provisioned).
    NoNode,
    /// The report was checked against a token that is no longer the agent's (a new one
    /// was issued): not written.
    OldToken,
}

/// CPU busy (percent) at which a node's report raises a low alert, and under which the
/// alert is lifted.
pub const CPU_ALERT: f64 = 90.0;
pub const CPU_CLEAR: f64 = 75.0;

/// `stamp` is the batch's change stamp, opened by the first report recorded (see
/// migration 0015): its node's row takes it in the same UPDATE that records the heartbeat,
/// so the stamping triggers on nodes and warmup_days find the row stamped already and
/// write nothing more, where without it each report bumped the counter and rewrote its
/// node's row twice.
fn accept_one(
    c: &super::Conn,
    agent: &str,
    token_issued_at: &str,
    report: Report,
    now: DateTime<Utc>,
    stamp: &mut Option<i64>,
) -> Result<Accepted, StoreError> {
    let agent = agent.to_string();
    // The token's state and its live node, in one read.
    type Found = (i64, String, Option<String>, Option<String>);
    let found: Option<Found> = c
        .prepare_cached(
            "SELECT t.last_seq, t.issued_at, n.id, n.status FROM agent_tokens t
             LEFT JOIN nodes n ON n.request_id = t.agent AND n.status <> 'decommissioned'
             WHERE t.agent = ?",
        )?
        .query_row([&agent], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    let Some((last, issued, node_id, status)) = found else {
        return Err(StoreError::NotFound(agent.clone()));
    };
    if issued != token_issued_at {
        return Ok(Accepted::OldToken);
    }
    let last = u64::try_from(last).unwrap_or(0);
    if report.seq <= last {
        return Ok(Accepted::Replay { last_seq: last });
    }
    let (Some(node_id), Some(status)) = (node_id, status) else {
        return Ok(Accepted::NoNode);
    };
    c.prepare_cached("UPDATE agent_tokens SET last_seq = ?, last_at = ? WHERE agent = ?")?
        .execute(params![
            i64::try_from(report.seq).unwrap_or(i64::MAX),
            ts(now),
            agent
        ])?;
    let recovered = record_report(c, &node_id, &status, &report, now, stamp)?;
    Ok(Accepted::Recorded { node_id, recovered })
}

/// What a report does once it is accepted (an agent's, checked by `accept_one`, or a
/// simulated node's, made by the engine): its heartbeat row, the node's last heartbeat,
/// its deliveries on the node's open warm-up day, its CPU alert raised or lifted, and an
/// unhealthy node brought back. Returns whether the node came back. `stamp` is the
/// batch's change stamp (see `accept_one`).
pub(crate) fn record_report(
    c: &super::Conn,
    node_id: &str,
    status: &str,
    report: &Report,
    now: DateTime<Utc>,
    stamp: &mut Option<i64>,
) -> Result<bool, StoreError> {
    let node_id = node_id.to_string();
    let at = ts(now);
    let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    c.prepare_cached(
        "INSERT INTO node_heartbeats (node_id, seq, measured_at, received_at, cpu_pct, mem_used,
            mem_total, queue_free, queue_len, net_rx, net_tx, delivered, bounced, deferred, complaints)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        node_id,
        i(report.seq),
        report.measured_at,
        at,
        report.cpu_pct,
        i(report.mem_used),
        i(report.mem_total),
        i(report.queue_free),
        i(report.queue_len),
        i(report.net_rx),
        i(report.net_tx),
        i(report.delivered),
        i(report.bounced),
        i(report.deferred),
        i(report.complaints),
    ])?;
    let seq = match *stamp {
        Some(seq) => seq,
        None => *stamp.insert(super::stamp(c)?),
    };
    c.prepare_cached("UPDATE nodes SET last_heartbeat = ?, change_seq = ? WHERE id = ?")?
        .execute(params![at, seq, node_id])?;
    // The deliveries, added to the node's open warm-up day (its own date, at the day
    // boundary's offset).
    let sent = report.delivered + report.bounced + report.deferred;
    // (Read first, then written from values: an INSERT ... SELECT into a table with
    // triggers goes through a temporary table, a page cache made and freed per report.)
    let open_day: Option<(String, i64, i64)> = if sent > 0 || report.complaints > 0 {
        c.prepare_cached(
            "SELECT COALESCE(day_date, ?2), day, cap FROM node_warmup
             WHERE node_id = ?1 AND status <> 'completed'",
        )?
        .query_row(params![node_id, now.date_naive().to_string()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?
    } else {
        None
    };
    if let Some((date, day, cap)) = open_day {
        c.prepare_cached(
            "INSERT INTO warmup_days (node_id, date, day, cap, scheduled, sent, delivered, deferred, bounced, complaints)
             VALUES (?1, ?2, ?8, ?9, ?9, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (node_id, date) DO UPDATE SET sent = sent + ?3, delivered = delivered + ?4,
                 deferred = deferred + ?5, bounced = bounced + ?6, complaints = MIN(delivered + ?4, complaints + ?7)",
        )?
        .execute(params![
            node_id,
            date,
            i(sent),
            i(report.delivered),
            i(report.deferred),
            i(report.bounced),
            i(report.complaints),
            day,
            cap
        ])?;
    }
    // A node busy near its limit: a low alert, lifted once it has room again.
    let cpu_subject = format!("cpu:node:{node_id}");
    if report.cpu_pct >= CPU_ALERT {
        let host: String = c
            .prepare_cached("SELECT hostname FROM nodes WHERE id = ?")?
            .query_row([&node_id], |r| r.get(0))?;
        let message = format!(
            "{host}: CPU {:.0}% busy (alert at {CPU_ALERT:.0}%)",
            report.cpu_pct
        );
        raise_alert(
            c,
            Severity::Low,
            "cpu",
            &cpu_subject,
            Some(&node_id),
            &message,
            &at,
        )?;
    } else if report.cpu_pct < CPU_CLEAR {
        resolve_alert(c, &cpu_subject, "CPU back under the threshold", &at)?;
    }
    let mut recovered = false;
    if status == "unhealthy" {
        let moved = transition(
            c,
            &node_id,
            NodeEvent::HeartbeatsBack,
            "engine",
            "its agent reports again",
            &at,
        )?;
        recovered = moved.is_ok();
        resolve_alert(
            c,
            &heartbeat_subject(&node_id),
            "its agent reports again",
            &at,
        )?;
    }
    Ok(recovered)
}

/// Heartbeats deleted per statement when old ones are pruned: a short write at a time.
const PRUNE_BATCH: i64 = 5_000;

impl Store {
    /// Deletes heartbeats received before `before`, oldest first, a batch per statement;
    /// returns how many. Rows go in time order (row ids grow with time), so finding
    /// nothing to delete is a read of the oldest row.
    pub async fn prune_heartbeats(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let cutoff = ts(before);
        let mut total = 0u64;
        for _ in 0..100 {
            let cutoff = cutoff.clone();
            let deleted = self
                .write(move |c| {
                    let oldest: Option<String> = c
                        .prepare_cached(
                            "SELECT received_at FROM node_heartbeats ORDER BY rowid LIMIT 1",
                        )?
                        .query_row([], |r| r.get(0))
                        .optional()?;
                    if oldest.is_none_or(|o| o >= cutoff) {
                        return Ok(0);
                    }
                    Ok(c.prepare_cached(
                        "DELETE FROM node_heartbeats WHERE rowid IN (
                             SELECT rowid FROM node_heartbeats ORDER BY rowid LIMIT ?1)
                           AND received_at < ?2",
                    )?
                    .execute(params![PRUNE_BATCH, cutoff])?)
                })
                .await?;
            total += deleted as u64;
            if (deleted as i64) < PRUNE_BATCH {
                break;
            }
        }
        Ok(total)
    }
}

/// The subject of a node's missed-heartbeats alert.
pub fn heartbeat_subject(node_id: &str) -> String {
    format!("heartbeat:node:{node_id}")
}

impl Store {
    /// Records an agent's token (a new one replaces the old: the node was bootstrapped
    /// again); its sequence starts over.
    pub async fn save_agent_token(
        &self,
        agent: &str,
        sealed: Option<Vec<u8>>,
        file: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let agent = agent.to_string();
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO agent_tokens (agent, key_sealed, key_file, issued_at) VALUES (?, ?, ?, ?)
                 ON CONFLICT (agent) DO UPDATE SET key_sealed = excluded.key_sealed,
                     key_file = excluded.key_file, issued_at = excluded.issued_at, last_seq = 0,
                     last_at = NULL",
            )?
            .execute(params![agent, sealed, file, ts(now)])?;
            Ok(())
        })
        .await
    }

    /// An agent's kept token, if it has one.
    pub async fn agent_token(&self, agent: &str) -> Result<Option<KeptToken>, StoreError> {
        let agent = agent.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT key_sealed, key_file, last_seq, issued_at FROM agent_tokens WHERE agent = ?",
            )?
            .query_row([agent], |r| {
                Ok(KeptToken {
                    sealed: r.get(0)?,
                    file: r.get(1)?,
                    last_seq: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                    issued_at: r.get(3)?,
                })
            })
            .optional()?)
        })
        .await
    }

    /// Every kept token whose node is not decommissioned, by agent: what `serve` loads at
    /// its start in one read, rather than one read at each agent's first report.
    pub async fn live_agent_tokens(&self) -> Result<Vec<(String, KeptToken)>, StoreError> {
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT t.agent, t.key_sealed, t.key_file, t.last_seq, t.issued_at
                 FROM agent_tokens t JOIN nodes n ON n.request_id = t.agent
                 WHERE n.status <> 'decommissioned'",
            )?
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    KeptToken {
                        sealed: r.get(1)?,
                        file: r.get(2)?,
                        last_seq: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                        issued_at: r.get(4)?,
                    },
                ))
            })?
            .collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Accepts a report whose signature the caller checked: written once, in sequence
    /// order, as its node's heartbeat; its deliveries added to the node's warm-up day; an
    /// unhealthy node brought back.
    pub async fn accept_report(
        &self,
        agent: &str,
        token_issued_at: &str,
        report: Report,
        now: DateTime<Utc>,
    ) -> Result<Accepted, StoreError> {
        let mut out = self
            .accept_reports(
                vec![(agent.to_string(), token_issued_at.to_string(), report)],
                now,
            )
            .await?;
        out.pop()
            .unwrap_or_else(|| Err(StoreError::NotFound(agent.to_string())))
    }

    /// [`accept_report`](Self::accept_report) for many reports in one transaction (what
    /// `serve` takes in a moment, written together); each its own outcome, in order.
    pub async fn accept_reports(
        &self,
        reports: Vec<(String, String, Report)>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<Accepted, StoreError>>, StoreError> {
        self.write(move |c| {
            let mut out = Vec::with_capacity(reports.len());
            let mut stamp = None;
            for (agent, issued, report) in reports {
                out.push(
                    match accept_one(c, &agent, &issued, report, now, &mut stamp) {
                        Err(StoreError::NotFound(a)) => Err(StoreError::NotFound(a)),
                        Err(e) => return Err(e),
                        ok => ok,
                    },
                );
            }
            Ok(out)
        })
        .await
    }

    /// Nodes in rotation whose agent has not reported since `before` (nor, if it never
    /// has, since its token was issued) are marked unhealthy, with a high alert naming how
    /// long it has been quiet. Returns the nodes marked.
    pub async fn mark_silent_nodes(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        self.write(move |c| {
            let silent: Vec<(String, String, String)> = c
                .prepare_cached(
                    "SELECT n.id, n.hostname, COALESCE(t.last_at, t.issued_at) FROM agent_tokens t
                     JOIN nodes n ON n.request_id = t.agent
                     WHERE n.status IN ('warming', 'active') AND COALESCE(t.last_at, t.issued_at) < ?",
                )?
                .query_map([ts(before)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            let at = ts(now);
            let mut marked = Vec::new();
            for (node_id, host, since) in silent {
                let why = format!("no heartbeat from its agent since {since}");
                if transition(c, &node_id, NodeEvent::HeartbeatsMissed, "engine", &why, &at)?.is_ok() {
                    raise_alert(
                        c,
                        Severity::High,
                        "heartbeat",
                        &heartbeat_subject(&node_id),
                        Some(&node_id),
                        &format!("{host}: {why}; out of rotation"),
                        &at,
                    )?;
                    marked.push(node_id);
                }
            }
            Ok(marked)
        })
        .await
    }
}

/// The figures `/metrics` shows, read in one go.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gauges {
    /// Requests by state.
    pub requests: Vec<(String, i64)>,
    /// Nodes by status (decommissioned ones left out).
    pub nodes: Vec<(String, i64)>,
    /// Open alerts by severity.
    pub alerts: Vec<(String, i64)>,
    /// Each provider's circuit: (provider, open).
    pub circuits: Vec<(String, bool)>,
    /// Live nodes with an agent, and the age in seconds of the oldest last heartbeat among
    /// them (since its token was issued, for one that never reported).
    pub agents: i64,
    pub oldest_heartbeat_secs: f64,
}

impl Store {
    pub async fn gauges(&self, now: DateTime<Utc>) -> Result<Gauges, StoreError> {
        self.read(move |c| {
            let pairs = |sql: &str| -> Result<Vec<(String, i64)>, StoreError> {
                Ok(c.prepare_cached(sql)?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?)
            };
            let requests = pairs("SELECT state, COUNT(*) FROM requests GROUP BY state ORDER BY state")?;
            let nodes = pairs(
                "SELECT status, COUNT(*) FROM nodes WHERE status <> 'decommissioned' GROUP BY status ORDER BY status",
            )?;
            let alerts = pairs(
                "SELECT severity, COUNT(*) FROM alerts WHERE resolved_at IS NULL GROUP BY severity ORDER BY severity",
            )?;
            let circuits = c
                .prepare_cached("SELECT provider, open FROM provider_breakers ORDER BY provider")?
                .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? != 0)))?
                .collect::<Result<_, _>>()?;
            let (agents, oldest): (i64, Option<f64>) = c
                .prepare_cached(
                    "SELECT COUNT(*), MAX(unixepoch(?) - unixepoch(COALESCE(t.last_at, t.issued_at)))
                     FROM agent_tokens t JOIN nodes n ON n.request_id = t.agent
                     WHERE n.status <> 'decommissioned'",
                )?
                .query_row([ts(now)], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(Gauges {
                requests,
                nodes,
                alerts,
                circuits,
                agents,
                oldest_heartbeat_secs: oldest.unwrap_or(0.0).max(0.0),
            })
        })
        .await
    }
}

/// The alerts with a notice to send at `?1` (now), unclaimed or their claim lapsed, not
/// silenced: an open alert not yet sent (its raising), or a resolved one that was sent when
/// raised and not yet since (its resolution). An alert resolved before its raising was sent
/// has nothing to tell.
const TO_SEND: &str = "(notify_until IS NULL OR notify_until < ?1)
    AND (silenced_until IS NULL OR silenced_until <= ?1)
    AND ((notified_at IS NULL AND resolved_at IS NULL)
      OR (notified_at IS NOT NULL AND resolved_at IS NOT NULL AND resolve_notified_at IS NULL))";

impl Store {
    /// Claims up to `most` alerts with a notice to send (their raising or their resolution;
    /// oldest first), each until `until`, for this sender; an alert another sender claimed is
    /// left to it until its claim lapses.
    pub async fn claim_alerts_to_send(
        &self,
        most: i64,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<super::AlertRow>, StoreError> {
        // Looked for first in a read (the index of unsent alerts): a router with nothing to
        // send opens no write transaction, and so syncs nothing to disk, every few seconds.
        let now_ts = ts(now);
        let any: bool = self
            .read(move |c| {
                Ok(c.prepare_cached(&format!(
                    "SELECT EXISTS (SELECT 1 FROM alerts WHERE {TO_SEND})"
                ))?
                .query_row([now_ts], |r| r.get(0))?)
            })
            .await?;
        if !any {
            return Ok(Vec::new());
        }
        self.write(move |c| {
            let ids: Vec<String> = c
                .prepare_cached(
                    &format!(
                        "UPDATE alerts SET notify_until = ?2 WHERE id IN (
                             SELECT id FROM alerts WHERE {TO_SEND}
                             ORDER BY COALESCE(resolved_at, raised_at) LIMIT ?3)
                         RETURNING id"
                    ),
                )?
                .query_map(params![ts(now), ts(until), most], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.push(
                    c.prepare_cached(&format!(
                        "SELECT {} FROM alerts a LEFT JOIN nodes n ON n.id = a.node_id WHERE a.id = ?",
                        super::reputation::ALERT_COLUMNS
                    ))?
                    .query_row([id], super::reputation::alert_row)?,
                );
            }
            out.sort_by(|a, b| {
                let at = |a: &super::AlertRow| a.resolved_at.clone().unwrap_or(a.raised_at.clone());
                at(a).cmp(&at(b))
            });
            Ok(out)
        })
        .await
    }

    /// Records what became of sending an alert: sent (`Ok`), or why not (tried again once
    /// the claim lapses).
    pub async fn alert_sent(
        &self,
        id: &str,
        outcome: Result<(), String>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let id = id.to_string();
        self.write(move |c| {
            match outcome {
                // A resolution's notice when the alert had been resolved (see `TO_SEND`).
                Ok(()) => c
                    .prepare_cached(
                        "UPDATE alerts SET notify_error = NULL,
                             notified_at = COALESCE(notified_at, ?1),
                             resolve_notified_at = CASE WHEN resolved_at IS NOT NULL
                                 AND notified_at IS NOT NULL THEN ?1 END
                         WHERE id = ?2",
                    )?
                    .execute(params![ts(now), id])?,
                Err(why) => c
                    .prepare_cached("UPDATE alerts SET notify_error = ? WHERE id = ?")?
                    .execute(params![why, id])?,
            };
            Ok(())
        })
        .await
    }
}

/// A node whose warm-up cap on record is not the one its Postfix enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapToPush {
    pub node_id: String,
    pub request_id: Option<String>,
    pub cluster: Option<String>,
    pub hostname: String,
    /// The daily cap to enforce; `None` once the warm-up is over (no limit).
    pub cap: Option<u64>,
}

impl Store {
    /// Nodes in service whose cap changed since it was last installed (or never was).
    pub async fn caps_to_push(&self, most: i64) -> Result<Vec<CapToPush>, StoreError> {
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT n.id, n.request_id, n.cluster, n.hostname,
                        CASE WHEN w.status = 'completed' THEN -1 ELSE w.cap END
                 FROM node_warmup w JOIN nodes n ON n.id = w.node_id
                 WHERE n.status IN ('warming', 'active', 'paused')
                   AND (w.pushed_cap IS NULL OR w.pushed_cap <>
                        CASE WHEN w.status = 'completed' THEN -1 ELSE w.cap END)
                 LIMIT ?",
            )?
            .query_map([most], |r| {
                let cap: i64 = r.get(4)?;
                Ok(CapToPush {
                    node_id: r.get(0)?,
                    request_id: r.get(1)?,
                    cluster: r.get(2)?,
                    hostname: r.get(3)?,
                    cap: u64::try_from(cap).ok(),
                })
            })?
            .collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Records the caps now enforced on these nodes (or, for nodes mailfleet does not
    /// reach, seen), in one write.
    pub async fn caps_pushed(&self, done: Vec<(String, Option<u64>)>) -> Result<(), StoreError> {
        if done.is_empty() {
            return Ok(());
        }
        self.write(move |c| {
            for (node_id, cap) in done {
                let v = cap.and_then(|c| i64::try_from(c).ok()).unwrap_or(-1);
                c.prepare_cached("UPDATE node_warmup SET pushed_cap = ? WHERE node_id = ?")?
                    .execute(params![v, node_id])?;
            }
            Ok(())
        })
        .await
    }
}
