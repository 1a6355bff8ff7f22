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

/// A batch of 30 with dependencies, through a cloud failing 30% of calls: dependents only
/// start after their prerequisites complete, the dependents of a failed prerequisite end
/// rejected, and once everything is settled and torn down, every tenant's quota and every
/// cluster's free capacity are exactly where they started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_thirty_through_failures_returns_quota_and_capacity_exactly() {
    use mailfleet::domain::batch::{self, Format};
    use std::time::Duration;
    let dir = tempfile::tempdir().expect("tmp");
    let overrides = FAST
        .replace(
            "[providers.sim]",
            "[providers.sim]\nfailure_rate = 0.3\nseed = 11",
        )
        .replace("[engine]", "[engine]\nmax_in_flight_per_tenant = 10");
    // A tenant too small for its order: one failure (and its dependents') is certain, not
    // left to chance.
    let tenants = r#"
[[tenants]]
name = "acme"
quota = { nodes = 200, cpu = 400, memory_gb = 800, storage_gb = 20000 }
[[tenants]]
name = "globex"
quota = { nodes = 150, cpu = 300, memory_gb = 600, storage_gb = 15000 }
[[tenants]]
name = "initech"
quota = { nodes = 100, cpu = 200, memory_gb = 400, storage_gb = 10000 }
[[tenants]]
name = "tiny"
quota = { nodes = 5, cpu = 4, memory_gb = 8, storage_gb = 200 }
"#;
    let cfg = config(&format!("{overrides}{tenants}"));
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let handle = mailfleet::engine::spawn(ctx.clone());

    // Something already runs before the batch, so "where they started" is not zero. With
    // failures injected, both of a pair may roll back: another pair is asked for then.
    let mut tenants_before = Vec::new();
    for pair in 0..5 {
        create(&ctx, "acme", "dallas", "ssd-2", &format!("before-{pair}a")).await;
        create(
            &ctx,
            "globex",
            "seattle",
            "ssd-4",
            &format!("before-{pair}b"),
        )
        .await;
        wait_for(&store, Duration::from_secs(60), "the first two", |rows| {
            all_terminal_or_completed(rows)
        })
        .await;
        tenants_before = mailfleet::engine::clusters::tenants(&store, &cfg)
            .await
            .expect("tenants");
        if tenants_before.iter().any(|t| t.used.units > 0) {
            break;
        }
    }
    let clusters_before = mailfleet::engine::clusters::clusters(&store, &cfg)
        .await
        .expect("clusters");

    // Three chains of ten, each item on the one before it; every fifth also on the other
    // chain's item at the same depth. Written in reverse, so only ordering makes it work.
    let mut text = String::new();
    for i in (0..30).rev() {
        let chain = i % 3;
        let depth = i / 3;
        // The head of the third chain is over its tenant's quota.
        let (tenant, plan) = match i {
            2 => ("tiny", "ssd-8"),
            _ => (["acme", "globex", "initech"][chain], "ssd-1"),
        };
        let region = ["dallas", "seattle", "amsterdam"][(i / 2) % 3];
        let mut deps = Vec::new();
        if depth > 0 {
            deps.push(format!("\"k{}\"", i - 3));
        }
        if depth > 0 && i % 5 == 0 {
            deps.push(format!("\"k{}\"", (i + 1) % 3 + (depth - 1) * 3));
        }
        text.push_str(&format!(
            "[[requests]]\nkey = \"k{i}\"\ntenant = \"{tenant}\"\nregion = \"{region}\"\nplan = \"{plan}\"\nlabel = \"b{i}\"\ndepends_on = [{}]\n\n",
            deps.join(", ")
        ));
    }
    let items = batch::parse(&text, Format::Toml).expect("batch parses");
    let rows = execute_import(&ctx, &items).await;
    assert_eq!(rows.len(), 30);
    let ids: std::collections::HashSet<String> = rows.iter().map(|r| r.id.clone()).collect();

    let settled = wait_for(&store, Duration::from_secs(120), "the batch", |rows| {
        all_terminal_or_completed(rows) && rows.iter().all(|r| !r.needs_attention)
    })
    .await;
    let mine: Vec<_> = settled.iter().filter(|r| ids.contains(&r.id)).collect();
    let count = |s: &str| mine.iter().filter(|r| r.state == s).count();
    assert!(count("completed") > 0, "some of the batch completed");
    let b2 = mine.iter().find(|r| r.label == "b2").expect("b2");
    assert_eq!(b2.state, "rejected");
    assert_eq!(
        b2.error.as_deref(),
        Some("quota: tiny: cpu 8/4 after this request")
    );
    assert_eq!(
        count("completed") + count("rolled_back") + count("rejected"),
        30
    );
    // Every dependent started only after each prerequisite completed; a dependent of a
    // failed prerequisite was rejected, saying which.
    for r in &mine {
        let d = store.request_detail(&r.id).await.expect("detail");
        let started = d
            .transitions
            .iter()
            .find(|t| t.to_state == "allocating")
            .map(|t| t.at.clone());
        for dep in &d.depends_on {
            let p = store.request_detail(dep).await.expect("prerequisite");
            let done = p
                .transitions
                .iter()
                .find(|t| t.to_state == "completed")
                .map(|t| t.at.clone());
            if let Some(started) = &started {
                let done = done
                    .as_ref()
                    .expect("a started dependent's prerequisite completed");
                assert!(
                    done <= started,
                    "{} started before {}",
                    r.label,
                    p.request.label
                );
            }
            if matches!(p.request.state.as_str(), "rolled_back" | "rejected") && done.is_none() {
                assert_eq!(
                    r.state, "rejected",
                    "{} waits on a failed prerequisite",
                    r.label
                );
            }
        }
        if r.state == "rejected" && r.label != "b2" {
            let why = r.error.as_deref().unwrap_or("");
            assert!(why.starts_with("prerequisite "), "{}: {why}", r.label);
        }
    }

    // Tear down what completed; then use is back exactly where it was.
    for r in mine.iter().filter(|r| r.state == "completed") {
        execute(
            &ctx,
            "ops-lead",
            Command::Deprovision {
                id: r.id.clone(),
                reason: Some("batch test over".into()),
            },
        )
        .await
        .expect("deprovision");
    }
    wait_for(&store, Duration::from_secs(120), "teardown", |rows| {
        rows.iter().filter(|r| ids.contains(&r.id)).all(|r| {
            matches!(
                r.state.as_str(),
                "deprovisioned" | "rolled_back" | "rejected"
            )
        }) && rows.iter().all(|r| !r.needs_attention)
    })
    .await;
    handle.shutdown().await;
    let tenants_after = mailfleet::engine::clusters::tenants(&store, &cfg)
        .await
        .expect("tenants");
    let clusters_after = mailfleet::engine::clusters::clusters(&store, &cfg)
        .await
        .expect("clusters");
    assert_eq!(
        tenants_after, tenants_before,
        "quota use is back where it started"
    );
    assert_eq!(
        clusters_after, clusters_before,
        "free capacity is back where it started"
    );
    assert!(tenants_before.iter().any(|t| t.used.units > 0));
}

async fn execute_import(
    ctx: &Arc<Ctx>,
    items: &[mailfleet::domain::batch::BatchItem],
) -> Vec<mailfleet::store::RequestRow> {
    mailfleet::engine::commands::import(ctx, "planner", items)
        .await
        .expect("import")
}

/// A cycle anywhere refuses the whole batch, names it, and writes nothing; so does one bad
/// order among good ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_a_cycle_or_a_bad_order_writes_nothing() {
    use mailfleet::domain::batch::{self, Format};
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(FAST);
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let cyclic = r#"{"requests": [
        {"key": "ok", "tenant": "acme", "region": "dallas", "plan": "ssd-1", "label": "ok-1"},
        {"key": "a", "tenant": "acme", "region": "dallas", "plan": "ssd-1", "label": "a-1", "depends_on": ["ok", "b"]},
        {"key": "b", "tenant": "acme", "region": "dallas", "plan": "ssd-1", "label": "b-1", "depends_on": ["c"]},
        {"key": "c", "tenant": "acme", "region": "dallas", "plan": "ssd-1", "label": "c-1", "depends_on": ["a"]}
    ]}"#;
    let items = batch::parse(cyclic, Format::Json).expect("parses");
    let err = mailfleet::engine::commands::import(&ctx, "planner", &items)
        .await
        .expect_err("a cycle");
    assert_eq!(
        err.to_string(),
        "dependency cycle: a → b → c → a; nothing was imported"
    );
    assert!(all_requests(&store).await.is_empty());

    let bad = r#"{"requests": [
        {"key": "ok", "tenant": "acme", "region": "dallas", "plan": "ssd-1", "label": "ok-1"},
        {"key": "a", "tenant": "acme", "region": "dallas", "plan": "ssd-1", "label": "a-1", "depends_on": ["ok"]},
        {"key": "b", "tenant": "acme", "region": "dallas", "plan": "ssd-1", "label": "b-1", "depends_on": ["c"]},
        {"key": "c", "tenant": "acme", "region": "dallas", "plan": "ssd-99", "label": "c-1"}
    ]}"#;
    let items = batch::parse(bad, Format::Json).expect("parses");
    let err = mailfleet::engine::commands::import(&ctx, "planner", &items)
        .await
        .expect_err("a bad plan");
    let text = err.to_string();
    assert!(
        text.starts_with("request 4 (key \"c\"): plan: unknown plan \"ssd-99\""),
        "{text}"
    );
    assert!(text.ends_with("nothing was imported"), "{text}");
    assert!(all_requests(&store).await.is_empty());
    // Two orders of one tenant with the same label (under two domains, so two hostnames):
    // the second is refused inside the transaction, and the first is not left behind.
    let twins = r#"[
        {"key": "x", "tenant": "acme", "region": "dallas", "plan": "ssd-1", "label": "twin"},
        {"key": "y", "tenant": "acme", "region": "dallas", "plan": "ssd-1", "label": "twin", "domain": "example.com"}
    ]"#;
    let items = batch::parse(twins, Format::Json).expect("parses");
    let err = mailfleet::engine::commands::import(&ctx, "planner", &items)
        .await
        .expect_err("a clash");
    assert!(err.to_string().contains("twin is already used"), "{err}");
    assert!(all_requests(&store).await.is_empty());
}
