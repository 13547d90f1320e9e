/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The interface between shim.c and the Rust crate (host.rs, shim.rs):
 * mic_shim_* are C services, mic_rs_* are Rust callbacks.
 */
#ifndef MIC_HOST_SHIM_H
#define MIC_HOST_SHIM_H

#include <linux/types.h>

#define MIC_SHIM_MAX_ATTRS 16

struct mic_shim_dev;
struct seq_file;
struct vm_area_struct;
struct device;

/* One sysfs or debugfs file: its name and mode (the table is Rust's). */
struct mic_shim_attr {
	const char *name;
	u16 mode;
};

enum mic_shim_irq {
	MIC_SHIM_IRQ_MSIX = 0,
	MIC_SHIM_IRQ_MSI = 1,
	MIC_SHIM_IRQ_INTX = 2,
};

enum mic_shim_poll {
	MIC_SHIM_POLL_NONE = 0,
	MIC_SHIM_POLL_READY = 1,
	MIC_SHIM_POLL_ERROR = 2,
};

/* What probe hands to the Rust side; everything is mapped and allocated. */
struct mic_shim_probe {
	u32 id;
	u16 device_id;
	u8 revision;
	u32 irq_type;
	u64 mmio_len;
	u64 aper_len;
	void *dp;
	u64 dp_len;
	u64 dp_dma;
};

struct mic_shim_vma {
	unsigned long pgoff;
	unsigned long len;
	bool writable;
};

int mic_shim_register(const struct mic_shim_attr *sysfs, unsigned int nsysfs,
		      const struct mic_shim_attr *dbg, unsigned int ndbg);
void mic_shim_unregister(void);
u32 mic_shim_read32(struct mic_shim_dev *sd, u32 off);
void mic_shim_write32(struct mic_shim_dev *sd, u32 off, u32 val);
void mic_shim_aper_read(struct mic_shim_dev *sd, u64 off, void *buf, size_t len);
void mic_shim_aper_write(struct mic_shim_dev *sd, u64 off, const void *buf, size_t len);
struct device *mic_shim_device(struct mic_shim_dev *sd);
void mic_shim_notify(struct mic_shim_dev *sd, unsigned int attr);
void mic_shim_wake(struct mic_shim_dev *sd);
void mic_shim_seq_write(struct seq_file *s, const void *data, size_t len);
void *mic_shim_dma_alloc(struct mic_shim_dev *sd, size_t len, u64 *dma);
void mic_shim_dma_free(struct mic_shim_dev *sd, void *p, size_t len, u64 dma);
int mic_shim_remap(struct vm_area_struct *vma, unsigned long off, void *cpu_addr, size_t len);
void mic_shim_wmb(void);
void mic_shim_rmb(void);
void mic_shim_vma_info(struct vm_area_struct *vma, struct mic_shim_vma *info);

int mic_rs_probe(struct mic_shim_dev *sd, const struct mic_shim_probe *info, void **rs);
void mic_rs_remove(void *rs);
ssize_t mic_rs_attr_show(void *rs, unsigned int attr, char *buf, size_t size);
ssize_t mic_rs_attr_store(void *rs, unsigned int attr, const char *buf, size_t len);
int mic_rs_debugfs_show(void *rs, unsigned int file, struct seq_file *s);
int mic_rs_open(void *rs, void **rs_file);
void mic_rs_release(void *rs_file);
long mic_rs_ioctl(void *rs_file, unsigned int cmd, unsigned long arg);
int mic_rs_mmap(void *rs_file, struct vm_area_struct *vma);
unsigned int mic_rs_poll(void *rs_file);
bool mic_rs_irq(void *rs);
void mic_rs_irq_thread(void *rs);

#endif
