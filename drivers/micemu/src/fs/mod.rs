//! FUSE filesystem serving sysfs and debugfs.
