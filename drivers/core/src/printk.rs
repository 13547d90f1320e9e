//! 3.10 printk ring records (written by the card, decoded by the host).
