//! What `/cluster` and `/metrics` show of scale-out: the config digest on
//! every node (so drift between nodes shows on the dashboard), and on a node
//! with VIPs whether they are announced and whether it drains.
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::control::metrics::{family, Labels};
use crate::control::Control;

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ClusterView {
    /// `sip-lb config-digest` of the running config.
    pub digest: String,
    pub vips: Vec<std::net::IpAddr>,
    pub announced: bool,
    pub draining: bool,
}

impl ClusterView {
    pub fn of(control: &Control) -> ClusterView {
        let c = control.cluster();
        ClusterView {
            digest: control.config_digest(),
            vips: c.map(|c| c.vips().to_vec()).unwrap_or_default(),
            announced: c.is_some_and(|c| c.is_announced()),
            draining: c.is_some_and(|c| c.is_draining()),
        }
    }
}

pub fn families(e: &mut DescriptorEncoder, v: &ClusterView) -> Result<(), std::fmt::Error> {
    family(
        e,
        "sip_lb_config_info",
        "The running config's routing digest (sip-lb config-digest): nodes of one cluster must show the same",
        MetricType::Gauge,
        [(vec![("digest", v.digest.clone())] as Labels, ConstGauge::new(1i64))],
    )?;
    if v.vips.is_empty() {
        return Ok(());
    }
    let per_vip = |on: bool| {
        v.vips.iter().map(move |ip| (vec![("vip", ip.to_string())] as Labels, ConstGauge::new(i64::from(on))))
    };
    family(
        e,
        "sip_lb_cluster_vip_announced",
        "1 while the VIP is on the announce interface (BIRD advertises it), 0 when withdrawn",
        MetricType::Gauge,
        per_vip(v.announced),
    )?;
    family(
        e,
        "sip_lb_cluster_draining",
        "1 while drain-node is under way",
        MetricType::Gauge,
        [(Labels::new(), ConstGauge::new(i64::from(v.draining)))],
    )
}
