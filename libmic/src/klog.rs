//! Card kernel log: decode and follow the printk ring.
