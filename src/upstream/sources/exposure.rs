//! `exposure`: Defender's exposure score, `GET {api_base}/api/exposureScore` (0–100, **lower is
//! better**); same token, permission, quota and body shape as `device`.

use super::{defender, Source};
use crate::model::Metric;
use crate::wire::EXPOSURE_SCORE_PATH;

/// The `exposure` source.
pub const SOURCE: Source = Source {
    metric: Metric::Exposure,
    path: EXPOSURE_SCORE_PATH,
    query: &[],
    read: defender::read_time_and_score,
    daily: None,
    controls: None,
};
