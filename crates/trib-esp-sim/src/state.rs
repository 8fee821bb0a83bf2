//! The state one simulator shares between its connections and background jobs.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::task::JoinSet;

use crate::common::lock;
use crate::faults::FaultState;
use crate::server::RateState;
use crate::{RecordedRequest, SimConfig, SimContact, SimKind, SimStats};
use crate::{hubspot, mailchimp, sendgrid, webhook};

/// How many recorded requests are kept (a long `tributary simulate` run must not grow
/// without bound).
const MAX_RECORDED: usize = 10_000;

pub(crate) struct Shared {
    pub(crate) config: SimConfig,
    pub(crate) base_url: String,
    pub(crate) faults: Mutex<FaultState>,
    pub(crate) stats: Mutex<SimStats>,
    pub(crate) requests: Mutex<VecDeque<RecordedRequest>>,
    pub(crate) in_flight: AtomicU64,
    pub(crate) rate: Mutex<RateState>,
    pub(crate) mailchimp: Mutex<mailchimp::Store>,
    pub(crate) hubspot: Mutex<hubspot::Store>,
    pub(crate) sendgrid: Mutex<sendgrid::Store>,
    pub(crate) webhook: Mutex<webhook::Store>,
    background: Mutex<JoinSet<()>>,
}

impl Shared {
    pub(crate) fn new(config: SimConfig, base_url: String) -> Self {
        Shared {
            faults: Mutex::new(FaultState::new(config.faults)),
            stats: Mutex::new(SimStats::default()),
            requests: Mutex::new(VecDeque::new()),
            in_flight: AtomicU64::new(0),
            rate: Mutex::new(RateState::default()),
            mailchimp: Mutex::new(mailchimp::Store::new(&config)),
            hubspot: Mutex::new(hubspot::Store::default()),
            sendgrid: Mutex::new(sendgrid::Store::default()),
            webhook: Mutex::new(webhook::Store::default()),
            background: Mutex::new(JoinSet::new()),
            config,
            base_url,
        }
    }

    /// Runs a background job (Mailchimp batch, SendGrid job) owned by the simulator.
    pub(crate) fn spawn(&self, job: impl Future<Output = ()> + Send + 'static) {
        let mut background = lock(&self.background);
        while background.try_join_next().is_some() {}
        background.spawn(job);
    }

    pub(crate) fn abort_background(&self) {
        lock(&self.background).abort_all();
    }

    pub(crate) fn count_writes(&self, writes: u64) {
        lock(&self.stats).writes_applied += writes;
    }

    pub(crate) fn record(&self, request: RecordedRequest) {
        let mut requests = lock(&self.requests);
        if requests.len() == MAX_RECORDED {
            requests.pop_front();
        }
        requests.push_back(request);
    }

    /// Marks one more request in flight and returns the new count.
    pub(crate) fn enter(&self) -> u64 {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let mut stats = lock(&self.stats);
        stats.requests += 1;
        stats.max_concurrent = stats.max_concurrent.max(now);
        now
    }

    pub(crate) fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    pub(crate) fn contacts(&self) -> BTreeMap<String, SimContact> {
        match self.config.kind {
            SimKind::Mailchimp => lock(&self.mailchimp).contacts(&self.config),
            SimKind::Hubspot => lock(&self.hubspot).contacts(),
            SimKind::Sendgrid => lock(&self.sendgrid).contacts(),
            SimKind::Webhook => lock(&self.webhook).contacts(),
        }
    }
}
