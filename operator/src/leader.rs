//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator replicas
//! only one writes.
//!
//! The holder renews the Lease every [`RENEW_INTERVAL`]; a Lease not renewed for
//! [`LEASE_DURATION`] may be taken over. Every write carries the `resourceVersion` read just
//! before it, so two candidates racing for the same Lease cannot both win (the loser gets 409
//! Conflict). A holder that cannot renew within [`RENEW_DEADLINE`] (shorter than the lease
//! duration, so it stops before anybody else may start) or finds another holder has lost the
//! Lease: `run` then exits non-zero and Kubernetes restarts the pod as a fresh candidate. Every
//! attempt is bounded in time (kube's client has no read timeout): a renewal that hangs counts
//! as a failed one, so the deadline holds even when the API server stops answering.
//!
//! ## Why this is not a kept crate
//!
//! `kubert` (linkerd's runtime, whose `lease` module does this) is built on kube 1.x; this
//! workspace is on kube 5, so it does not fit. `kube-lease-manager` 0.13 fits the versions
//! (kube 5, k8s-openapi 0.29) but not the guarantees above:
//! - it has no renew deadline: a holder whose renewal fails keeps believing it leads (its
//!   `watch()` keeps the last `true` while it retries), and one whose request hangs learns
//!   nothing until the request returns, while a standby takes the Lease once it expires — two
//!   writers;
//! - it takes an expired Lease in two writes, a forced release and then an apply, and the
//!   release does not depend on what was read: of two standbys, the later one's release can
//!   clear the Lease the other has just taken, and both lead until that one's next renewal;
//! - its renewals are unconditional patches (and the chart's Role would need `patch` on
//!   Leases).
//!
//! What is written here is small instead: a pure [`decide`] over the Lease as read, and one
//! write per attempt that carries the resourceVersion it read.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;

/// How long a Lease is valid after its last renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews (and a candidate retries).
pub const RENEW_INTERVAL: Duration = Duration::from_secs(5);
/// A holder that has not renewed successfully for this long gives up.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// Longest one attempt (a read and a write) may take before it counts as failed. A holder's
/// last attempt starts at most [`RENEW_DEADLINE`] after its last renewal, so it has stopped
/// before `RENEW_DEADLINE + ATTEMPT_TIMEOUT`, still inside [`LEASE_DURATION`].
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Which Lease, and who we are.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This process's identity (pod name, or host name and pid).
    pub identity: String,
}

/// What a candidate should do with the Lease as it is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// There is no Lease: create it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Nobody holds it, or the holder let it expire: take it over.
    Take,
    /// Somebody else holds a valid Lease: wait.
    Wait,
}

/// Decides from the Lease's spec alone (pure; unit-tested).
pub fn decide(lease: Option<&Lease>, identity: &str, now: Timestamp) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    match spec.holder_identity.as_deref() {
        Some(h) if h == identity => Decision::Renew,
        None | Some("") => Decision::Take,
        Some(_) => {
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0));
            let renewed = spec.renew_time.or(spec.acquire_time).map(|t| t.0);
            match renewed {
                Some(t) if t + SignedDuration::from_secs(duration) > now => Decision::Wait,
                _ => Decision::Take,
            }
        }
    }
}

fn lease_seconds() -> i32 {
    i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(15)
}

/// One acquire-or-renew attempt: `Ok(true)` when we hold the Lease afterwards.
pub async fn try_acquire_or_renew(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
) -> Result<bool, kube::Error> {
    let current = api.get_opt(&cfg.name).await?;
    let now = Timestamp::now();
    let result = match decide(current.as_ref(), &cfg.identity, now) {
        Decision::Wait => return Ok(false),
        Decision::Create => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(cfg.identity.clone()),
                    lease_duration_seconds: Some(lease_seconds()),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        decision @ (Decision::Renew | Decision::Take) => {
            let Some(mut lease) = current else {
                return Ok(false);
            };
            let spec = lease.spec.get_or_insert_with(Default::default);
            if decision == Decision::Take {
                spec.holder_identity = Some(cfg.identity.clone());
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.lease_duration_seconds = Some(lease_seconds());
            spec.renew_time = Some(MicroTime(now));
            // `lease.metadata.resourceVersion` is the one we read: a concurrent writer makes
            // this replace fail with 409 instead of both of us believing we lead.
            api.replace(&cfg.name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
    };
    match result {
        Ok(()) => Ok(true),
        Err(kube::Error::Api(s)) if s.is_conflict() || s.is_already_exists() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Waits until this process holds the Lease.
pub async fn acquire(api: &Api<Lease>, cfg: &LeaseConfig) {
    tracing::info!(lease = %cfg.name, namespace = %cfg.namespace, identity = %cfg.identity, "waiting for the leader Lease");
    loop {
        match tokio::time::timeout(ATTEMPT_TIMEOUT, try_acquire_or_renew(api, cfg)).await {
            Ok(Ok(true)) => {
                tracing::info!(lease = %cfg.name, identity = %cfg.identity, "acquired the leader Lease");
                return;
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "leader election: could not read or write the Lease")
            }
            // A write that landed anyway names us in the Lease: the next attempt renews it.
            Err(_) => tracing::warn!(
                timeout = ?ATTEMPT_TIMEOUT,
                "leader election: the API server did not answer in time"
            ),
        }
        tokio::time::sleep(RENEW_INTERVAL).await;
    }
}

/// Renews the Lease until it is lost; returns why.
pub async fn hold(api: &Api<Lease>, cfg: &LeaseConfig) -> String {
    let mut last_renewal = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(RENEW_INTERVAL).await;
        let error =
            match tokio::time::timeout(ATTEMPT_TIMEOUT, try_acquire_or_renew(api, cfg)).await {
                Ok(Ok(true)) => {
                    last_renewal = tokio::time::Instant::now();
                    continue;
                }
                Ok(Ok(false)) => return "another process holds the Lease".into(),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("the API server did not answer within {ATTEMPT_TIMEOUT:?}"),
            };
        tracing::warn!(%error, "leader election: renewing the Lease failed");
        if last_renewal.elapsed() >= RENEW_DEADLINE {
            return format!("could not renew the Lease for {RENEW_DEADLINE:?}: {error}");
        }
    }
}

/// Gives the Lease up (on graceful shutdown) so a standby takes over at once. Best effort.
pub async fn release(api: &Api<Lease>, cfg: &LeaseConfig) {
    let Ok(Some(mut lease)) = api.get_opt(&cfg.name).await else {
        return;
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => tracing::info!(lease = %cfg.name, "released the leader Lease"),
        Err(e) => tracing::warn!(error = %e, "could not release the leader Lease"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed_secs_ago: i64) -> Lease {
        let now = Timestamp::now();
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(now - SignedDuration::from_secs(renewed_secs_ago))),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn decisions() {
        let now = Timestamp::now();
        assert_eq!(decide(None, "a", now), Decision::Create);
        assert_eq!(
            decide(Some(&lease(Some("a"), 1)), "a", now),
            Decision::Renew
        );
        assert_eq!(decide(Some(&lease(Some("b"), 1)), "a", now), Decision::Wait);
        assert_eq!(
            decide(Some(&lease(Some("b"), 14)), "a", now),
            Decision::Wait
        );
        assert_eq!(
            decide(Some(&lease(Some("b"), 16)), "a", now),
            Decision::Take
        );
        assert_eq!(decide(Some(&lease(None, 1)), "a", now), Decision::Take);
    }

    #[test]
    fn holder_gives_up_before_others_may_take_over() {
        assert!(RENEW_DEADLINE < LEASE_DURATION);
        assert!(RENEW_INTERVAL < RENEW_DEADLINE);
        assert!(RENEW_DEADLINE + ATTEMPT_TIMEOUT < LEASE_DURATION);
    }
}
