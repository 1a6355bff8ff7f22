//! Issue 4: who may decide (the approver role and four-eyes), quotas at admission,
//! dependencies in batches, and an approver clearing a queue.

mod support;

use mailfleet::engine::commands::{execute, Command, CommandError, CreateRequest, Outcome};
use mailfleet::engine::Ctx;
use std::sync::Arc;
use support::*;

/// Every ssd-16 order in dallas needs approval; ops-lead approves for everyone, acme-lead
/// for acme only.
const GATED: &str = r#"
[approvals]
approvers = ["ops-lead"]

[[tenants]]
name = "acme"
quota = { nodes = 20, cpu = 64, memory_gb = 128, storage_gb = 2000 }
approvers = ["acme-lead"]

[[tenants]]
name = "globex"
quota = { nodes = 20, cpu = 64, memory_gb = 128, storage_gb = 2000 }

[[approval_rules]]
name = "Big boxes"
priority = 5
min_cpu = 16
regions = ["dallas"]
"#;

async fn order(ctx: &Arc<Ctx>, who: &str, tenant: &str, plan: &str, label: &str) -> String {
    let cmd = Command::Create(CreateRequest {
        tenant: tenant.into(),
        region: "dallas".into(),
        plan: plan.into(),
        label: label.into(),
        domain: None,
        depends_on: vec![],
    });
    match execute(ctx, who, cmd).await.expect("create") {
        Outcome::Created(r) => {
            assert_eq!(r.state, "pending_approval", "{label} waits for approval");
            r.id
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn approve(id: &str) -> Command {
    Command::Approve {
        id: id.into(),
        reason: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_approvers_decide_and_never_on_their_own_request() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(&format!("{FAST}{GATED}"));
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let mine = order(&ctx, "ops-lead", "acme", "ssd-16", "big-1").await;
    let short = &mine[mine.len() - 8..];

    // Four-eyes: the requester cannot approve, even holding the role.
    let err = execute(&ctx, "ops-lead", approve(&mine))
        .await
        .expect_err("own request");
    assert!(matches!(err, CommandError::Refused(_)));
    assert_eq!(
        err.to_string(),
        format!("ops-lead cannot approve {short}: ops-lead requested it")
    );
    // The role: someone who is not an approver can neither approve nor reject.
    let err = execute(&ctx, "mallory", approve(&mine))
        .await
        .expect_err("no role");
    assert_eq!(
        err.to_string(),
        format!("mallory cannot approve {short}: mallory is not an approver for acme")
    );
    let reject = Command::Reject {
        id: mine.clone(),
        reason: "no".into(),
    };
    assert!(execute(&ctx, "mallory", reject).await.is_err());
    // A tenant's own approver decides for that tenant only.
    let theirs = order(&ctx, "dev", "globex", "ssd-16", "big-2").await;
    let err = execute(&ctx, "acme-lead", approve(&theirs))
        .await
        .expect_err("other tenant");
    assert!(
        err.to_string().contains("not an approver for globex"),
        "{err}"
    );
    // Nothing was written by the refusals.
    let req = store.get_request(&mine).await.expect("get").expect("row");
    assert_eq!(req.state, "pending_approval");

    // A rejection needs a reason; then it ends rejected with it.
    let err = execute(
        &ctx,
        "ops-lead",
        Command::Reject {
            id: theirs.clone(),
            reason: "  ".into(),
        },
    )
    .await
    .expect_err("reason");
    assert!(err.to_string().contains("needs a reason"), "{err}");
    execute(
        &ctx,
        "ops-lead",
        Command::Reject {
            id: theirs.clone(),
            reason: "too big for globex".into(),
        },
    )
    .await
    .expect("reject");
    execute(&ctx, "acme-lead", approve(&mine))
        .await
        .expect("approve");
    let req = store.get_request(&mine).await.expect("get").expect("row");
    assert_eq!(req.state, "queued", "approved requests resume on their own");
    let req = store.get_request(&theirs).await.expect("get").expect("row");
    assert_eq!(req.state, "rejected");
    assert_eq!(req.error.as_deref(), Some("too big for globex"));

    // Every decision is in the audit log with actor and time.
    let audit = store.list_audit(100).await.expect("audit");
    let find = |action: &str, actor: &str, id: &str| {
        audit
            .iter()
            .any(|a| a.action == action && a.actor == actor && a.target.as_deref() == Some(id))
    };
    assert!(find("request.approve", "acme-lead", &mine), "{audit:?}");
    assert!(find("request.reject", "ops-lead", &theirs), "{audit:?}");
    assert!(!audit.iter().any(|a| a.actor == "mallory"));
}

/// Quota is checked at admission: over it, the request ends rejected with the numbers;
/// deprovisioning gives the quota back and the next order fits again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_quota_is_rejected_with_numbers_and_deprovision_returns_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(&format!("{FAST}{GATED}"));
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let handle = mailfleet::engine::spawn(ctx.clone());
    // ssd-8 is 8 cpu: eight of them fill acme's 64.
    let mut ids = Vec::new();
    for n in 0..8 {
        ids.push(
            create(&ctx, "acme", "dallas", "ssd-8", &format!("n-{n}"))
                .await
                .id,
        );
    }
    wait_for(
        &store,
        std::time::Duration::from_secs(30),
        "eight nodes",
        |rows| rows.iter().filter(|r| r.state == "completed").count() == 8,
    )
    .await;
    let use_ = store.tenant_usage().await.expect("usage");
    assert_eq!(use_["acme"].cpu, 64);
    assert_eq!(use_["acme"].nodes, 8);

    let extra = create(&ctx, "acme", "dallas", "ssd-8", "n-8").await.id;
    let rows = wait_for(
        &store,
        std::time::Duration::from_secs(30),
        "n-8 decided",
        |rows| rows.iter().any(|r| r.id == extra && r.state == "rejected"),
    )
    .await;
    let r = rows.iter().find(|r| r.id == extra).expect("row");
    assert_eq!(
        r.error.as_deref(),
        Some("quota: acme: cpu 72/64 after this request")
    );
    let d = store.request_detail(&extra).await.expect("detail");
    assert!(d
        .transitions
        .iter()
        .any(|t| t.to_state == "rejected" && t.actor == "engine"));
    assert_eq!(store.tenant_usage().await.expect("usage")["acme"].cpu, 64);

    // Deprovision one: its quota comes back, and a new order is admitted.
    execute(
        &ctx,
        "ops-lead",
        Command::Deprovision {
            id: ids[0].clone(),
            reason: Some("make room".into()),
        },
    )
    .await
    .expect("deprovision");
    wait_for(
        &store,
        std::time::Duration::from_secs(30),
        "deprovisioned",
        |rows| {
            rows.iter()
                .any(|r| r.id == ids[0] && r.state == "deprovisioned")
        },
    )
    .await;
    assert_eq!(store.tenant_usage().await.expect("usage")["acme"].cpu, 56);
    let again = create(&ctx, "acme", "dallas", "ssd-8", "n-9").await.id;
    wait_for(
        &store,
        std::time::Duration::from_secs(30),
        "n-9 completed",
        |rows| rows.iter().any(|r| r.id == again && r.state == "completed"),
    )
    .await;
    assert_eq!(store.tenant_usage().await.expect("usage")["acme"].cpu, 64);
    handle.shutdown().await;
}

/// The store keeps each version of a rule; a request records the version that held it, and
/// changing the rule in the config adds a version without rewriting old requests' history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_record_which_rule_version_held_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(&format!("{FAST}{GATED}"));
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let first = order(&ctx, "dev", "acme", "ssd-16", "big-1").await;
    let r = store.get_request(&first).await.expect("get").expect("row");
    assert_eq!(r.approval_rule.as_deref(), Some("Big boxes"));
    assert_eq!(r.approval_rule_version, Some(1));
    assert_eq!(
        r.why_waiting().as_deref(),
        Some("awaiting approval (Big boxes: cpu 16 ≥ 16, region dallas)")
    );

    // Syncing the same config again adds nothing.
    store
        .sync_catalog(&cfg, chrono::Utc::now())
        .await
        .expect("sync");
    assert_eq!(
        store.approval_rule_versions().await.expect("rules").len(),
        1
    );

    // The rule changes (cpu 8 and up): version 2, and ssd-8 orders now wait too.
    let changed = GATED.replace("min_cpu = 16", "min_cpu = 8");
    let cfg2 = config(&format!("{FAST}{changed}"));
    store
        .sync_catalog(&cfg2, chrono::Utc::now())
        .await
        .expect("sync");
    let ctx2 = sim_ctx(&store, &cfg2, system_clock());
    let second = order(&ctx2, "dev", "acme", "ssd-8", "mid-1").await;
    let r2 = store.get_request(&second).await.expect("get").expect("row");
    assert_eq!(r2.approval_rule_version, Some(2));
    let r1 = store.get_request(&first).await.expect("get").expect("row");
    assert_eq!(r1.approval_rule_version, Some(1), "history keeps version 1");
    let versions = store.approval_rule_versions().await.expect("rules");
    assert_eq!(
        versions
            .iter()
            .map(|v| (v.name.as_str(), v.version))
            .collect::<Vec<_>>(),
        vec![("Big boxes", 2), ("Big boxes", 1)]
    );
    assert!(versions[0].definition.contains("\"min_cpu\":8"));
    assert!(versions[1].definition.contains("\"min_cpu\":16"));
}
