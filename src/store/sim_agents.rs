//! The store's side of the simulated nodes' agents (`engine::sim_agents`): which nodes
//! report, a page at a time, and their reports recorded through the heartbeat path agents'
//! reports take (`agents::record_report`).

use super::{rows, Store, StoreError};
use crate::agent::report::Report;
use crate::store::sql::params;
use chrono::{DateTime, Utc};

/// A node in service whose agent the engine may play.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimAgentNode {
    pub node_id: String,
    /// warming, active, paused or maintenance.
    pub status: String,
    pub cluster: Option<String>,
    /// Its warm-up's cap today (a finished warm-up's last), if it has a warm-up.
    pub cap: Option<i64>,
}

impl Store {
    /// Up to `limit` nodes in service with ids after `after`, in id order; not those with
    /// an agent token (a real agent of their own reports for them).
    pub async fn sim_agent_nodes(
        &self,
        after: &str,
        limit: i64,
    ) -> Result<Vec<SimAgentNode>, StoreError> {
        let after = after.to_string();
        self.read(move |c| {
            rows(
                c,
                "SELECT n.id, n.status, n.cluster, w.cap FROM nodes n
                 LEFT JOIN node_warmup w ON w.node_id = n.id
                 WHERE n.id > ?1 AND n.status IN ('warming', 'active', 'paused', 'maintenance')
                   AND NOT EXISTS (SELECT 1 FROM agent_tokens t WHERE t.agent = n.request_id)
                 ORDER BY n.id LIMIT ?2",
                params![after, limit],
                |r| {
                    Ok(SimAgentNode {
                        node_id: r.get(0)?,
                        status: r.get(1)?,
                        cluster: r.get(2)?,
                        cap: r.get(3)?,
                    })
                },
            )
        })
        .await
    }

    /// Records simulated agents' reports, one transaction for the batch, as an agent's
    /// accepted report is recorded (there is no token to check: the engine made them).
    pub async fn record_sim_reports(
        &self,
        reports: Vec<(String, Report)>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            let mut stamp = None;
            for (node_id, report) in reports {
                let status: Option<String> = c
                    .prepare_cached("SELECT status FROM nodes WHERE id = ?")?
                    .query_row([&node_id], |r| r.get(0))
                    .ok();
                // Gone, or out of service since the page was read: no agent reports.
                let Some(status) = status.filter(|s| {
                    matches!(s.as_str(), "warming" | "active" | "paused" | "maintenance")
                }) else {
                    continue;
                };
                super::agents::record_report(c, &node_id, &status, &report, now, &mut stamp)?;
            }
            Ok(())
        })
        .await
    }
}
