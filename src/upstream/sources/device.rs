//! `device`: Microsoft Secure Score for Devices, Defender's
//! `GET {api_base}/api/configurationScore` (raw points, higher is better).

use super::{defender, Source};
use crate::model::Metric;
use crate::wire::CONFIGURATION_SCORE_PATH;

/// The `device` source.
pub const SOURCE: Source = Source {
    metric: Metric::Device,
    path: CONFIGURATION_SCORE_PATH,
    query: &[],
    read: defender::read_time_and_score,
    daily: None,
    controls: None,
};
