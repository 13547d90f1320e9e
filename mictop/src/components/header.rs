//! The header's state: the root watched and the host's facts.

use crate::model::HostInfo;

#[derive(Debug)]
pub struct Header {
    /// The root, as shown.
    pub root: String,
    pub host: Option<HostInfo>,
}

impl Header {
    #[must_use]
    pub fn new(root: String) -> Self {
        Self { root, host: None }
    }

    /// New host facts. `false`: nothing changed.
    pub fn on_host(&mut self, host: HostInfo) -> bool {
        if self.host.as_ref() == Some(&host) {
            return false;
        }
        self.host = Some(host);
        true
    }
}
