// SPDX-License-Identifier: GPL-2.0-only
/*
 * The KUnit suite of mic-core. Linux 6.12 has no #[kunit_tests] for Rust,
 * so the suite is declared here and each case calls a Rust entry point in
 * tests.rs, which asserts through KUnit.
 */
#include <kunit/test.h>

#define MIC_CASES(X)                                                           \
	X(loader_linux_layout)                                                 \
	X(loader_refusals_write_nothing)                                       \
	X(state_machine_boot_shutdown_reset)                                   \
	X(state_machine_failed_reset)                                          \
	X(reset_sequence_timing)                                               \
	X(devpage_walker)                                                      \
	X(devpage_walker_hostile_pages)                                        \
	X(printk_ring_wraps)                                                   \
	X(printk_ring_hostile_snapshots)                                       \
	X(card_discovery_and_reports)                                          \
	X(vop_add_and_copy_desc)                                               \
	X(vop_hostile_rings)                                                   \
	X(card_virtio_handshakes)                                              \
	X(smpt_map_unmap)                                                      \
	X(sysfs_parsing)

#define MIC_DECLARE(name) void mic_kunit_##name(struct kunit *test);
MIC_CASES(MIC_DECLARE)

#define MIC_CASE(name) KUNIT_CASE(mic_kunit_##name),
static struct kunit_case mic_core_cases[] = {
	MIC_CASES(MIC_CASE)
	{}
};

static struct kunit_suite mic_core_suite = {
	.name = "mic_core",
	.test_cases = mic_core_cases,
};
kunit_test_suite(mic_core_suite);

MODULE_DESCRIPTION("KUnit tests of the Intel MIC X100 driver core");
MODULE_LICENSE("GPL");
