//! The background refresher: keeps every registered tenant warm, so that interactive requests are
//! served from the fresh cache.
//!
//! Owns *when* each tenant's metric is refreshed: every metric of every tenant once per refresh
//! period (three quarters of the fresh window, so that a refresh lands before the shortest
//! jittered expiry), each at its own offset (a hash of the tenant id and metric), so that neither
//! start-up nor expiry causes a burst. It starts a
//! fetch only through [`ScoreCache::refresh`] (which keeps single flight, cool-downs and back-off)
//! and stays behind interactive requests: at most `max_concurrent` background fetches, and none
//! started unless more than half of the global in-flight slots are free. It does not fetch,
//! charge quotas or store anything itself; per-tenant quotas are charged by the fetch as usual.

use crate::cache::ScoreCache;
use crate::config::{CacheSettings, RefreshSettings};
use crate::policy::Priority;
use crate::service::Services;
use crate::tenants::{Registry, Tenant, TenantId};
use crate::upstream::Metric;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// How often the schedule is looked at.
const TICK: Duration = Duration::from_millis(100);

/// The refresher's plan: when each tenant is next due.
pub struct Refresher {
    /// Weak, so that the refresher ends when the gateway's services are dropped.
    services: Weak<Services>,
    /// Time between two refreshes of one tenant.
    period: Duration,
    /// Over how long the first round is spread.
    spread: Duration,
    /// Most background fetches at once.
    max_concurrent: usize,
    /// The Redis shared with other replicas: each metric is refreshed by the one replica that
    /// takes its lease for the period. `None` for a single process.
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// The mutable state of a running refresher.
#[derive(Default)]
struct Schedule {
    /// The registry the schedule was built for; replaced on reload.
    registry: Option<Arc<Registry>>,
    /// `(due, tenant, metric)`, earliest first.
    queue: BTreeSet<(Instant, TenantId, Metric)>,
    /// When each tenant's metric is due (the key into `queue`).
    due: HashMap<(TenantId, Metric), Instant>,
    /// Background fetches this refresher started and that still run.
    running: Vec<(TenantId, Metric)>,
    /// Leases held for the fetches in `running`: given back if the fetch fails.
    leases: HashMap<(TenantId, Metric), String>,
}

impl Refresher {
    /// A refresher for `services` with the given settings.
    pub fn new(
        services: &Arc<Services>,
        cache: &CacheSettings,
        settings: &RefreshSettings,
    ) -> Self {
        let period = Duration::from_secs(cache.fresh_seconds).mul_f64(0.75);
        let spread = settings
            .startup_spread_seconds
            .map_or(period, Duration::from_secs);
        Self {
            services: Arc::downgrade(services),
            period: period.max(Duration::from_millis(100)),
            spread,
            max_concurrent: settings.max_concurrent.max(1),
            cluster: services.cluster().cloned(),
        }
    }

    /// Runs the refresher in the background until the services are dropped.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn run(self) {
        let start = Instant::now();
        let mut schedule = Schedule::default();
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(services) = self.services.upgrade() else {
                return;
            };
            let registry = services.registry();
            self.plan(&mut schedule, &registry, start);
            self.step(&mut schedule, services.cache(), &registry).await;
        }
    }

    /// Brings the schedule in line with the registry: new tenants get their offset, gone ones go.
    fn plan(&self, schedule: &mut Schedule, registry: &Arc<Registry>, start: Instant) {
        if schedule
            .registry
            .as_ref()
            .is_some_and(|known| Arc::ptr_eq(known, registry))
        {
            return;
        }
        let first_round = schedule.registry.is_none();
        let now = Instant::now();
        let registered = |id: &TenantId, metric: Metric| {
            registry
                .get(id.as_str())
                .is_some_and(|tenant| tenant.has(metric))
        };
        schedule
            .due
            .retain(|(id, metric), _| registered(id, *metric));
        schedule
            .queue
            .retain(|(_, id, metric)| registered(id, *metric));
        for tenant in registry.all() {
            for &metric in tenant.metrics() {
                let key = (tenant.id.clone(), metric);
                if schedule.due.contains_key(&key) {
                    continue;
                }
                let (base, window) = if first_round {
                    (start, self.spread)
                } else {
                    (now, self.period)
                };
                let at = base + offset(&tenant.id, metric, window);
                schedule.due.insert(key, at);
                schedule.queue.insert((at, tenant.id.clone(), metric));
            }
        }
        schedule.registry = Some(registry.clone());
    }

    /// Starts the refreshes that are due, as far as the budget allows.
    async fn step(&self, schedule: &mut Schedule, cache: &ScoreCache, registry: &Registry) {
        let mut still_running = Vec::with_capacity(schedule.running.len());
        for (id, metric) in std::mem::take(&mut schedule.running) {
            if cache.is_fetching(&id, metric).await {
                still_running.push((id, metric));
                continue;
            }
            let token = schedule.leases.remove(&(id.clone(), metric));
            let failed = cache
                .last_fetch(&id, metric)
                .is_none_or(|last| last.error.is_some());
            if let (Some(token), true) = (token, failed) {
                self.release(&id, metric, token).await;
            }
        }
        schedule.running = still_running;
        let now = Instant::now();
        // Background work: the in-flight cap decides whether it may start (see `Priority`).
        while schedule.running.len() < self.max_concurrent && cache.admits(Priority::Background) {
            let Some((at, id, metric)) = schedule.queue.first().cloned() else {
                return;
            };
            if at > now {
                return;
            }
            schedule.queue.remove(&(at, id.clone(), metric));
            let Some(tenant) = registry
                .get(id.as_str())
                .filter(|tenant| tenant.has(metric))
                .cloned()
            else {
                schedule.due.remove(&(id, metric));
                continue;
            };
            let next = match self.recently_fetched(cache, &tenant, metric) {
                // Someone else fetched it lately: come back one period after that fetch.
                Some(ago) => now + self.period.saturating_sub(ago),
                None => {
                    match self.lease(&tenant.id, metric).await {
                        // Another replica refreshes it this period.
                        crate::cluster::Lease::Taken => {}
                        lease => {
                            cache.refresh(&tenant, metric, Priority::Background).await;
                            let started = cache.is_fetching(&tenant.id, metric).await;
                            if started {
                                schedule.running.push((tenant.id.clone(), metric));
                            }
                            if let crate::cluster::Lease::Held(token) = lease {
                                if started {
                                    schedule.leases.insert((tenant.id.clone(), metric), token);
                                } else {
                                    // Gated (cool-down, back-off): another replica may try.
                                    self.release(&tenant.id, metric, token).await;
                                }
                            }
                        }
                    }
                    now + self.period
                }
            };
            schedule.due.insert((id.clone(), metric), next);
            schedule.queue.insert((next, id, metric));
        }
    }

    /// Takes the tenant's metric's lease for this period; `Local` without a cluster.
    async fn lease(&self, id: &TenantId, metric: Metric) -> crate::cluster::Lease {
        match &self.cluster {
            Some(cluster) => {
                let key = crate::upstream::ScoreKey {
                    tenant: id.clone(),
                    metric,
                };
                cluster.try_lease(&key, self.period).await
            }
            None => crate::cluster::Lease::Local,
        }
    }

    /// Gives back a lease whose refresh failed or never started.
    async fn release(&self, id: &TenantId, metric: Metric, token: String) {
        if let Some(cluster) = &self.cluster {
            let key = crate::upstream::ScoreKey {
                tenant: id.clone(),
                metric,
            };
            cluster.release_lease(&key, token).await;
        }
    }

    /// How long ago the tenant's metric was fetched successfully, if less than half a period
    /// ago.
    fn recently_fetched(
        &self,
        cache: &ScoreCache,
        tenant: &Tenant,
        metric: Metric,
    ) -> Option<Duration> {
        let last = cache.last_fetch(&tenant.id, metric)?;
        if last.error.is_some() {
            return None;
        }
        let ago = Instant::now().saturating_duration_since(last.finished);
        (ago < self.period / 2).then_some(ago)
    }
}

/// The tenant's metric's fixed place within `window`: a hash of the id and metric, so that
/// tenants (and one tenant's metrics) spread evenly and keep their place across restarts.
fn offset(id: &TenantId, metric: Metric, window: Duration) -> Duration {
    let millis = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    if millis == 0 {
        return Duration::ZERO;
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut hasher);
    metric.hash(&mut hasher);
    Duration::from_millis(hasher.finish() % millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::{self, FakeSource};

    #[test]
    fn offsets_stay_within_the_window_and_spread_out() {
        let window = Duration::from_secs(60);
        let offsets: Vec<Duration> = (0..1000)
            .map(|i| {
                offset(
                    &TenantId::parse(&format!("tenant-{i}")).unwrap(),
                    Metric::Device,
                    window,
                )
            })
            .collect();
        assert!(offsets.iter().all(|o| *o < window));
        // No tenth of the window holds more than twice its share.
        let mut buckets = [0usize; 10];
        for o in &offsets {
            buckets[(o.as_millis() / 6000) as usize] += 1;
        }
        assert!(buckets.iter().all(|&n| n < 200), "{buckets:?}");
        assert_eq!(
            offset(
                &TenantId::parse("a").unwrap(),
                Metric::Device,
                Duration::ZERO
            ),
            Duration::ZERO
        );
    }

    fn refresher(spread: Duration, max_concurrent: usize) -> Refresher {
        Refresher {
            services: Weak::new(),
            period: Duration::from_secs(45),
            spread,
            max_concurrent,
            cluster: None,
        }
    }

    fn cache(source: &Arc<FakeSource>, max_in_flight: usize) -> Arc<ScoreCache> {
        let settings = CacheSettings {
            fresh_seconds: 60,
            ..CacheSettings::default()
        };
        Arc::new(ScoreCache::new(
            &settings,
            testing::outbound(source.clone(), Arc::default(), max_in_flight),
            Arc::default(),
            tokio::runtime::Handle::current(),
        ))
    }

    /// A refresher, its cache over `source` and a registry, driven by the test.
    struct Rig {
        refresher: Refresher,
        schedule: Schedule,
        cache: Arc<ScoreCache>,
        registry: Arc<Registry>,
    }

    impl Rig {
        /// `tenants` tenants; the cache's in-flight cap and the refresher's spread and budget.
        fn new(
            source: &Arc<FakeSource>,
            tenants: usize,
            max_in_flight: usize,
            spread: Duration,
            max_concurrent: usize,
        ) -> Self {
            Self {
                refresher: refresher(spread, max_concurrent),
                schedule: Schedule::default(),
                cache: cache(source, max_in_flight),
                registry: testing::registry(tenants),
            }
        }

        /// Runs the refresher's loop, as [`Refresher::run`] does, from `start` until `until`.
        async fn drive(&mut self, start: Instant, until: Instant) {
            while Instant::now() < until {
                self.refresher
                    .plan(&mut self.schedule, &self.registry, start);
                self.refresher
                    .step(&mut self.schedule, &self.cache, &self.registry)
                    .await;
                tokio::time::sleep(TICK).await;
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_round_is_spread_over_the_start_up_window_and_fetches_each_tenant_once() {
        let source = FakeSource::new(42.0, Duration::from_millis(50));
        let spread = Duration::from_secs(10);
        let mut rig = Rig::new(&source, 20, 8, spread, 2);
        let start = Instant::now();
        rig.drive(start, start + Duration::from_secs(12)).await;
        let (cache, registry) = (&rig.cache, &rig.registry);
        let calls = source.call_times();
        assert_eq!(calls.len(), 20, "one call per tenant: {calls:?}");
        for (id, at) in &calls {
            let due = start + offset(&TenantId::parse(id).unwrap(), Metric::Device, spread);
            assert!(*at >= due, "{id} fetched before its place in the spread");
            assert!(*at <= due + Duration::from_secs(1), "{id} fetched late");
        }
        assert!(source.max_running() <= 2, "within the refresher's budget");
        let first = calls.iter().map(|(_, at)| *at).min().unwrap();
        let last = calls.iter().map(|(_, at)| *at).max().unwrap();
        assert!(
            last - first >= spread / 2,
            "no burst: the round spans the window"
        );
        for tenant in registry.all() {
            assert!(cache
                .last_fetch(&tenant.id, Metric::Device)
                .is_some_and(|f| f.error.is_none()));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_refresher_starts_nothing_while_more_than_half_the_slots_are_taken() {
        let source = FakeSource::new(42.0, Duration::from_secs(1));
        let mut rig = Rig::new(&source, 8, 4, Duration::from_millis(500), 4);
        let (cache, registry) = (rig.cache.clone(), rig.registry.clone());
        // Three interactive fetches hold three of the four slots for a second.
        for tenant in &registry.all()[..3] {
            let (cache, tenant) = (cache.clone(), tenant.clone());
            tokio::spawn(async move {
                let wait = Instant::now() + Duration::from_secs(5);
                cache.get(&tenant, Metric::Device, None, wait).await
            });
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(cache.outbound().in_flight_cap().in_flight(), 3);
        let start = Instant::now();
        // Every tenant is due within 500 ms; none may start while the slots are taken.
        rig.drive(start, start + Duration::from_millis(900)).await;
        assert_eq!(source.total_calls(), 3, "{:?}", source.call_times());
        // Once they are free, the refresher catches up, and does not repeat the interactive fetches.
        rig.drive(start, start + Duration::from_secs(5)).await;
        for tenant in registry.all() {
            assert_eq!(source.calls(tenant.id.as_str()), 1, "{}", tenant.id);
        }
    }
}
