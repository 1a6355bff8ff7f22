//! The renewal task: every `[tls] renew_check`, each live node's certificate that expires
//! within `[tls] renew_before_days` is ordered again from the same CA, through the same DNS
//! provider; the new one supersedes it. A failure is recorded on the certificate (shown by
//! `mailfleet tls status` and the console) and tried again at the next check.
//!
//! Each renewal first claims its certificate in the store (`cert_claim_renewal`), so that
//! two processes running this task (the console and `mailfleet work`) never order the
//! same certificate twice. A claim is released when the renewal ends either way; one that
//! lapsed instead marks a renewal cut off in the middle of its order, whose dns-01
//! challenge record may still be in the zone. Before ordering, any challenge record left
//! at the certificate's `_acme-challenge` names is removed: while the claim holds, no other
//! order for those names is under way.

use super::ca::{keep_cert_off_thread, Ca};
use super::mail::{clear_challenges, zone_for};
use super::Ctx;
use std::sync::Arc;
use tokio::sync::watch;

/// What one pass did: (hostname, Ok(new expiry) or Err(why)).
pub type Renewals = Vec<(String, Result<String, String>)>;

/// Renews what is due now.
pub async fn pass(ctx: &Ctx) -> Renewals {
    let mut out = Vec::new();
    if matches!(ctx.mail.ca, Ca::None) {
        return out;
    }
    let now = ctx.clock.now();
    let before = now + chrono::Duration::days(i64::from(ctx.cfg.tls.renew_before_days));
    let due = match ctx.store.certificates(Some(before)).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "renewal: cannot list certificates");
            return out;
        }
    };
    for c in due {
        let at = ctx.clock.now();
        match ctx
            .store
            .cert_claim_renewal(&c.id, &ctx.owner, at, at + renewal_lease(&ctx.cfg))
            .await
        {
            Ok(Some(lapsed)) => {
                if let Some(owner) = lapsed {
                    tracing::info!(host = %c.hostname, %owner, "an earlier renewal was cut off; ordering again");
                }
            }
            Ok(None) => {
                tracing::debug!(host = %c.hostname, "another process is renewing it");
                continue;
            }
            Err(e) => {
                tracing::warn!(host = %c.hostname, error = %e, "renewal: cannot claim the certificate");
                continue;
            }
        }
        // The CA's and the DNS API's words are in a failure: logged and stored as untrusted.
        let result = renew_one(ctx, &c)
            .await
            .map_err(|e| crate::untrusted::untrusted_text(&e));
        match &result {
            Ok(until) => tracing::info!(host = %c.hostname, until = %until, "certificate renewed"),
            Err(e) => {
                tracing::warn!(host = %c.hostname, error = %e, "certificate renewal failed");
                if let Err(se) = ctx.store.cert_renew_failed(&c.id, e.clone()).await {
                    tracing::warn!(error = %se, "renewal: cannot record the failure");
                }
            }
        }
        out.push((c.hostname.clone(), result));
    }
    out
}

async fn renew_one(ctx: &Ctx, c: &crate::store::CertRow) -> Result<String, String> {
    // The node's request, read once: its domain, and its cluster for the install below.
    let req = match &c.request_id {
        Some(id) => ctx.store.get_request(id).await.map_err(|e| e.to_string())?,
        None => None,
    };
    let domain = req
        .as_ref()
        .and_then(|r| r.domain.clone())
        .unwrap_or_else(|| super::pipeline::DEFAULT_DOMAIN.to_string());
    let zone = zone_for(&ctx.cfg, &c.hostname, &domain)?;
    let dns = ctx.mail.dns()?.cloned();
    if let Some(dns) = dns.as_deref() {
        let cleared = clear_challenges(dns, &zone, &c.names)
            .await
            .map_err(|e| format!("clearing old challenge records: {e}"))?;
        if cleared > 0 {
            tracing::info!(host = %c.hostname, cleared, "challenge records of an interrupted order removed");
        }
    }
    let issued = ctx
        .mail
        .ca
        .obtain(dns.as_deref(), &zone, &c.names)
        .await
        .map_err(|e| e.to_string())?;
    let (chain, key_pem) = (
        issued.chain_pem.clone(),
        zeroize::Zeroizing::new(issued.key_pem.clone()),
    );
    let cert = keep_cert_off_thread(&ctx.store, &ctx.cfg, &c.hostname, issued).await?;
    // A node reached over SSH gets the new certificate before it is recorded as the one in
    // force: what the store says is active is what the node serves.
    if let Some((ssh, node)) = ssh_node(ctx, c, req.as_ref(), &domain).await? {
        if let Err(e) = ssh
            .install_certificate(&node, &cert.id, &chain, &key_pem)
            .await
        {
            if let Some(f) = &cert.key_file {
                let _ = std::fs::remove_file(ctx.store.key_path(f));
            }
            return Err(format!(
                "the new certificate could not be installed on {}: {e}; it keeps serving the old one",
                c.hostname
            ));
        }
        tracing::info!(host = %c.hostname, "renewed certificate installed on the node");
    }
    let until = cert.not_after.to_rfc3339();
    ctx.store
        .cert_renewed(&c.id, cert, ctx.clock.now())
        .await
        .map_err(|e| e.to_string())?;
    Ok(until)
}

/// The node a certificate is for, when its cluster reaches its machines over SSH.
async fn ssh_node<'a>(
    ctx: &'a Ctx,
    c: &crate::store::CertRow,
    req: Option<&crate::store::RequestRow>,
    domain: &str,
) -> Result<Option<(&'a crate::access::remote::SshAccess, crate::access::NodeRef)>, String> {
    let Some(req) = req else {
        return Ok(None);
    };
    let request_id = &req.id;
    let Some(ssh) = ctx
        .cluster(req.cluster.as_deref())
        .ok()
        .and_then(|b| b.access.ssh())
    else {
        return Ok(None);
    };
    let node = super::node_ref(&ctx.store, request_id, &c.hostname, domain)
        .await
        .map_err(|e| format!("installing the new certificate: {e}"))?;
    Ok(Some((ssh, node)))
}

/// How long a renewal's claim holds: two full orders' time, and ten minutes besides for
/// the DNS and the store. A renewal that overruns it may be ordered a second time by
/// another process; one cut off is ordered again once it lapses.
pub fn renewal_lease(cfg: &crate::config::Config) -> chrono::Duration {
    let order = chrono::Duration::from_std(cfg.tls.order_timeout)
        .unwrap_or_else(|_| chrono::Duration::hours(1));
    order * 2 + chrono::Duration::minutes(10)
}

/// Runs passes until shutdown.
pub async fn run(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    if matches!(ctx.mail.ca, Ca::None) {
        return;
    }
    loop {
        pass(&ctx).await;
        tokio::select! {
            _ = tokio::time::sleep(ctx.cfg.tls.renew_check) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
