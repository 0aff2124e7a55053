// Placeholder until the SIPp demo lands.
pub fn run_demo(_sip_lb_bin: &std::path::Path, _seconds: u64) -> anyhow::Result<()> {
    anyhow::bail!("the loopback demo is not built yet")
}
