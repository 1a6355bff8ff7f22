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
