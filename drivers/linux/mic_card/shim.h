/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The interface between shim.c and the Rust crate (card.rs, shim.rs):
 * mic_card_shim_* are C services, mic_card_rs_* are Rust callbacks.
 */
#ifndef MIC_CARD_SHIM_H
#define MIC_CARD_SHIM_H

#include <linux/types.h>

struct mic_card_shim_dev;

/* Which card doorbell interrupt fired. */
enum mic_card_shim_db {
	MIC_CARD_SHIM_DB_SHUTDOWN = 0,
	MIC_CARD_SHIM_DB_CONFIG = 1,
};

/* Why the card goes down (reboot notifier actions). */
enum mic_card_shim_down {
	MIC_CARD_SHIM_HALT = 0,
	MIC_CARD_SHIM_POWER_OFF = 1,
	MIC_CARD_SHIM_RESTART = 2,
};

int mic_card_shim_register(u64 mmio_base, u64 mmio_len);
void mic_card_shim_unregister(void);
u32 mic_card_shim_read32(struct mic_card_shim_dev *sd, u32 off);
void mic_card_shim_write32(struct mic_card_shim_dev *sd, u32 off, u32 val);
void __iomem *mic_card_shim_ioremap(u64 phys, size_t len);
void mic_card_shim_iounmap(void __iomem *addr);
void mic_card_shim_fromio(void *dst, const void __iomem *src, size_t len);
void mic_card_shim_toio(void __iomem *dst, const void *src, size_t len);
int mic_card_shim_request_db(struct mic_card_shim_dev *sd, unsigned int irq,
			     enum mic_card_shim_db which);
void mic_card_shim_poweroff(void);

int mic_card_rs_probe(struct mic_card_shim_dev *sd, u64 mmio_len, void **rs);
void mic_card_rs_remove(void *rs);
void mic_card_rs_db(void *rs, unsigned int which);
void mic_card_rs_panic(void *rs);
void mic_card_rs_down(void *rs, unsigned int why);

#endif
