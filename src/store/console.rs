//! What the console reads: one consistent snapshot of the fleet, requests and listings, taken
//! in a single read transaction so counts and rows agree.

use super::{rows, NodeRow, RequestRow, Store, StoreError};
use serde::Serialize;
use std::collections::HashMap;

/// Per request: attempts over all steps, and which step (1–4) failed, if one did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepSummary {
    pub attempts: i64,
    pub failed_step: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListingRow {
    pub id: String,
    pub node_id: Option<String>,
    pub node_label: Option<String>,
    pub ip_address: String,
    pub zone: String,
    pub code: Option<String>,
    pub meaning: Option<String>,
    pub listed_at: String,
    pub delisted_at: Option<String>,
    pub details: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ConsoleSnapshot {
    pub nodes: Vec<NodeRow>,
    pub requests: Vec<RequestRow>,
    pub steps: HashMap<String, StepSummary>,
    pub listings: Vec<ListingRow>,
}

impl Store {
    pub async fn console_snapshot(&self) -> Result<ConsoleSnapshot, StoreError> {
        self.read(|c| {
            c.execute_batch("BEGIN")?;
            let out = (|| {
                let nodes = rows(c, "SELECT * FROM nodes ORDER BY created_at, id", [], NodeRow::from_row)?;
                let requests = rows(c, "SELECT * FROM requests ORDER BY created_at, id", [], RequestRow::from_row)?;
                let steps = rows(
                    c,
                    "SELECT request_id, SUM(attempts), MIN(CASE WHEN status = 'failed' THEN position END)
                     FROM request_steps GROUP BY request_id",
                    [],
                    |r| Ok((r.get::<_, String>(0)?, StepSummary { attempts: r.get(1)?, failed_step: r.get(2)? })),
                )?
                .into_iter()
                .collect();
                let listings = rows(
                    c,
                    "SELECT b.id, b.node_id, n.label, b.ip_address, b.blacklist_provider, b.code, b.meaning, b.listed_at,
                            b.delisted_at, b.details
                     FROM ip_blacklist_events b LEFT JOIN nodes n ON n.id = b.node_id
                     ORDER BY (b.delisted_at IS NOT NULL), b.listed_at DESC LIMIT 5000",
                    [],
                    |r| {
                        Ok(ListingRow {
                            id: r.get(0)?,
                            node_id: r.get(1)?,
                            node_label: r.get(2)?,
                            ip_address: r.get(3)?,
                            zone: r.get(4)?,
                            code: r.get(5)?,
                            meaning: r.get(6)?,
                            listed_at: r.get(7)?,
                            delisted_at: r.get(8)?,
                            details: r.get(9)?,
                        })
                    },
                )?;
                Ok(ConsoleSnapshot { nodes, requests, steps, listings })
            })();
            let _ = c.execute_batch("COMMIT");
            out
        })
        .await
    }
}
