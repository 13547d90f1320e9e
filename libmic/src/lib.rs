//! The client library shared by `micctl`, `mictop` and `mpssd`: everything a
//! tool needs to know about cards under a `MIC_ROOT`.

pub mod klog;
