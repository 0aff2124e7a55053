//! A backend whose connection cannot be made (`stream::links`) counts as
//! down for the router, like one failing its probes; it comes back when its
//! connection is made again. Checked every [`TICK`]: the link's state is one
//! atomic per backend, and a Plan is published only when a state changed.
use std::sync::Arc;
use std::time::Duration;

use super::Control;

/// How often link states are read.
const TICK: Duration = Duration::from_millis(50);

impl Control {
    /// Takes link states into the backends' states; publishes a new Plan if
    /// an enabled backend changed.
    pub fn sync_links(&self) {
        let Some(links) = &self.links else { return };
        let mut inner = self.lock();
        let mut changed = false;
        for (addr, usable) in links.states() {
            let Some(b) = inner.backends.get_mut(addr) else { continue };
            if b.link_down == usable {
                b.link_down = !usable;
                changed |= !b.drained;
            }
        }
        if changed {
            self.publish(&inner);
        }
    }
}

/// Runs [`Control::sync_links`] every [`TICK`] (nothing without links).
pub(super) async fn ticker(control: Arc<Control>) {
    if control.links.is_none() {
        return;
    }
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        control.sync_links();
    }
}
