// SPDX-License-Identifier: GPL-2.0-only
/*
 * mic_card C shim: what Linux 6.12 has no Rust abstraction for on the card
 * side — the "mic" platform device and driver, the MMIO and device-page
 * mappings, the doorbell interrupts, and the panic and reboot notifiers.
 * It decides nothing; every callback forwards to a mic_card_rs_* function
 * of the Rust crate (card.rs), and shim.rs wraps each service once.
 */
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/module.h>
#include <linux/notifier.h>
#include <linux/panic_notifier.h>
#include <linux/platform_device.h>
#include <linux/reboot.h>
#include <linux/slab.h>
#include <asm/processor.h>

#include "shim.h"

#define MIC_CARD_DBS 2

struct mic_card_shim_dev {
	struct platform_device *pdev;
	void __iomem *mmio;
	void *rs;
	int irq[MIC_CARD_DBS];
	struct notifier_block panic_nb;
	struct notifier_block reboot_nb;
	bool panic_registered;
	bool reboot_registered;
};

static struct platform_device *mic_card_pdev;

u32 mic_card_shim_read32(struct mic_card_shim_dev *sd, u32 off)
{
	return ioread32(sd->mmio + off);
}

void mic_card_shim_write32(struct mic_card_shim_dev *sd, u32 off, u32 val)
{
	iowrite32(val, sd->mmio + off);
}

void __iomem *mic_card_shim_ioremap(u64 phys, size_t len)
{
	return ioremap(phys, len);
}

void mic_card_shim_iounmap(void __iomem *addr)
{
	iounmap(addr);
}

void mic_card_shim_fromio(void *dst, const void __iomem *src, size_t len)
{
	memcpy_fromio(dst, src, len);
}

void mic_card_shim_toio(void __iomem *dst, const void *src, size_t len)
{
	memcpy_toio(dst, src, len);
}

void mic_card_shim_poweroff(void)
{
	orderly_poweroff(true);
}

static irqreturn_t mic_card_db_irq(int irq, void *data)
{
	struct mic_card_shim_dev *sd = data;
	void *rs = READ_ONCE(sd->rs);
	unsigned int i;

	/* Requested during probe: until it returns there is no state to run. */
	if (!rs)
		return IRQ_HANDLED;
	for (i = 0; i < MIC_CARD_DBS; i++)
		if (sd->irq[i] == irq)
			mic_card_rs_db(rs, i);
	return IRQ_HANDLED;
}

int mic_card_shim_request_db(struct mic_card_shim_dev *sd, unsigned int irq,
			     enum mic_card_shim_db which)
{
	static const char *const names[MIC_CARD_DBS] = { "Shutdown", "virtio_config_intr" };
	int err;

	if (which >= MIC_CARD_DBS || sd->irq[which] >= 0)
		return -EINVAL;
	err = request_threaded_irq(irq, NULL, mic_card_db_irq, IRQF_ONESHOT, names[which], sd);
	if (err)
		return err;
	sd->irq[which] = irq;
	return 0;
}

static int mic_card_panic(struct notifier_block *nb, unsigned long event, void *ptr)
{
	struct mic_card_shim_dev *sd = container_of(nb, struct mic_card_shim_dev, panic_nb);

	mic_card_rs_panic(sd->rs);
	return NOTIFY_DONE;
}

static int mic_card_reboot(struct notifier_block *nb, unsigned long action, void *ptr)
{
	struct mic_card_shim_dev *sd = container_of(nb, struct mic_card_shim_dev, reboot_nb);

	switch (action) {
	case SYS_HALT:
		mic_card_rs_down(sd->rs, MIC_CARD_SHIM_HALT);
		break;
	case SYS_POWER_OFF:
		mic_card_rs_down(sd->rs, MIC_CARD_SHIM_POWER_OFF);
		break;
	case SYS_RESTART:
		mic_card_rs_down(sd->rs, MIC_CARD_SHIM_RESTART);
		break;
	}
	return NOTIFY_DONE;
}

static void mic_card_release(struct mic_card_shim_dev *sd)
{
	unsigned int i;

	if (sd->reboot_registered)
		unregister_reboot_notifier(&sd->reboot_nb);
	if (sd->panic_registered)
		atomic_notifier_chain_unregister(&panic_notifier_list, &sd->panic_nb);
	for (i = 0; i < MIC_CARD_DBS; i++)
		if (sd->irq[i] >= 0)
			free_irq(sd->irq[i], sd);
	if (sd->rs)
		mic_card_rs_remove(sd->rs);
	kfree(sd);
}

static int mic_card_probe(struct platform_device *pdev)
{
	struct mic_card_shim_dev *sd;
	struct resource *res;
	void *rs = NULL;
	int err;

	sd = kzalloc(sizeof(*sd), GFP_KERNEL);
	if (!sd)
		return -ENOMEM;
	sd->pdev = pdev;
	sd->irq[0] = sd->irq[1] = -1;
	sd->mmio = devm_platform_get_and_ioremap_resource(pdev, 0, &res);
	if (IS_ERR(sd->mmio)) {
		err = PTR_ERR(sd->mmio);
		kfree(sd);
		return err;
	}
	/* Device page, doorbells (through mic_card_shim_request_db), bootparam. */
	err = mic_card_rs_probe(sd, resource_size(res), &rs);
	if (err) {
		mic_card_release(sd);
		return err;
	}
	WRITE_ONCE(sd->rs, rs);
	sd->panic_nb.notifier_call = mic_card_panic;
	atomic_notifier_chain_register(&panic_notifier_list, &sd->panic_nb);
	sd->panic_registered = true;
	sd->reboot_nb.notifier_call = mic_card_reboot;
	err = register_reboot_notifier(&sd->reboot_nb);
	if (err) {
		mic_card_release(sd);
		return err;
	}
	sd->reboot_registered = true;
	platform_set_drvdata(pdev, sd);
	return 0;
}

static void mic_card_remove(struct platform_device *pdev)
{
	mic_card_release(platform_get_drvdata(pdev));
}

static struct platform_driver mic_card_driver = {
	.probe = mic_card_probe,
	.remove = mic_card_remove,
	.driver = {
		.name = "mic",
	},
};

/* Knights Corner only, as the original: family 11, model 1. */
static bool mic_card_on_x100(void)
{
	return boot_cpu_data.x86 == 11 && boot_cpu_data.x86_model == 1;
}

int mic_card_shim_register(u64 mmio_base, u64 mmio_len)
{
	struct resource res = DEFINE_RES_MEM(mmio_base, mmio_len);
	int err;

	if (!mic_card_on_x100()) {
		pr_err("mic_card: not running on X100\n");
		return -ENODEV;
	}
	err = platform_driver_register(&mic_card_driver);
	if (err)
		return err;
	mic_card_pdev = platform_device_register_simple("mic", 0, &res, 1);
	if (IS_ERR(mic_card_pdev)) {
		platform_driver_unregister(&mic_card_driver);
		return PTR_ERR(mic_card_pdev);
	}
	return 0;
}

void mic_card_shim_unregister(void)
{
	platform_device_unregister(mic_card_pdev);
	platform_driver_unregister(&mic_card_driver);
}
