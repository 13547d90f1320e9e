// SPDX-License-Identifier: GPL-2.0-only
/*
 * mic_host C shim: the registrations Linux 6.12 has no Rust abstraction for.
 *
 * It owns the PCI driver and its ID table, the BAR mappings, the interrupt
 * vectors and the shutdown-interrupt handler, the DMA-coherent device page,
 * the "mic" class with one attribute per entry of the table the Rust side
 * hands over, the debugfs files, and /dev/micN (open, release, ioctl, mmap,
 * poll). It decides nothing: every callback forwards to a mic_rs_* function
 * of the Rust crate (host.rs), and every service the Rust side needs is one
 * mic_shim_* function below, wrapped once in shim.rs.
 */
#include <linux/cdev.h>
#include <linux/debugfs.h>
#include <linux/device.h>
#include <linux/dma-mapping.h>
#include <linux/fs.h>
#include <linux/idr.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/kref.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/poll.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/sysfs.h>
#include <linux/wait.h>

#include "shim.h"

#define MIC_MAX_DEVS 256
#define MIC_MSIX_VECTORS 8
#define MIC_APERTURE_BAR 0
#define MIC_MMIO_BAR 4

struct mic_shim_dbg {
	struct mic_shim_dev *sd;
	unsigned int index;
};

struct mic_shim_dev {
	struct kref ref;
	struct pci_dev *pdev;
	int id;
	void *rs;
	void __iomem *mmio;
	void __iomem *aper;
	resource_size_t mmio_len;
	resource_size_t aper_len;
	void *dp;
	dma_addr_t dp_dma;
	enum mic_shim_irq irq_type;
	int irq;
	struct device *cdev_dev;
	struct kernfs_node *notify[MIC_SHIM_MAX_ATTRS];
	struct dentry *dbg_dir;
	struct mic_shim_dbg dbg[MIC_SHIM_MAX_ATTRS];
	struct cdev cdev;
	bool cdev_added;
	wait_queue_head_t wq;
};

static struct class *mic_class;
static dev_t mic_devt;
static DEFINE_IDA(mic_ida);
static struct dentry *mic_dbg_root;
static struct device_attribute mic_dev_attrs[MIC_SHIM_MAX_ATTRS];
static struct attribute *mic_attrs[MIC_SHIM_MAX_ATTRS + 1];
static const struct attribute_group mic_group = { .attrs = mic_attrs };
static const struct attribute_group *mic_groups[] = { &mic_group, NULL };
static const struct mic_shim_attr *mic_dbg_spec;
static unsigned int mic_dbg_count;

static void mic_shim_release(struct kref *ref)
{
	kfree(container_of(ref, struct mic_shim_dev, ref));
}

/* --- services for the Rust side ------------------------------------------ */

u32 mic_shim_read32(struct mic_shim_dev *sd, u32 off)
{
	return ioread32(sd->mmio + off);
}

void mic_shim_write32(struct mic_shim_dev *sd, u32 off, u32 val)
{
	iowrite32(val, sd->mmio + off);
}

void mic_shim_aper_read(struct mic_shim_dev *sd, u64 off, void *buf, size_t len)
{
	memcpy_fromio(buf, sd->aper + off, len);
}

void mic_shim_aper_write(struct mic_shim_dev *sd, u64 off, const void *buf, size_t len)
{
	memcpy_toio(sd->aper + off, buf, len);
}

struct device *mic_shim_device(struct mic_shim_dev *sd)
{
	return &sd->pdev->dev;
}

void mic_shim_notify(struct mic_shim_dev *sd, unsigned int attr)
{
	if (attr < MIC_SHIM_MAX_ATTRS && sd->notify[attr])
		sysfs_notify_dirent(sd->notify[attr]);
}

void mic_shim_wake(struct mic_shim_dev *sd)
{
	wake_up_interruptible_all(&sd->wq);
}

void mic_shim_seq_write(struct seq_file *s, const void *data, size_t len)
{
	seq_write(s, data, len);
}

void *mic_shim_dma_alloc(struct mic_shim_dev *sd, size_t len, u64 *dma)
{
	dma_addr_t handle;
	void *p = dma_alloc_coherent(&sd->pdev->dev, len, &handle, GFP_KERNEL);

	*dma = handle;
	return p;
}

void mic_shim_dma_free(struct mic_shim_dev *sd, void *p, size_t len, u64 dma)
{
	dma_free_coherent(&sd->pdev->dev, len, p, dma);
}

/* Maps `len` bytes of coherent memory at `off` into the VMA, as the original. */
int mic_shim_remap(struct vm_area_struct *vma, unsigned long off, void *cpu_addr, size_t len)
{
	return remap_pfn_range(vma, vma->vm_start + off, virt_to_phys(cpu_addr) >> PAGE_SHIFT,
			       len, vma->vm_page_prot);
}

void mic_shim_wmb(void)
{
	wmb();
}

void mic_shim_rmb(void)
{
	rmb();
}

void mic_shim_vma_info(struct vm_area_struct *vma, struct mic_shim_vma *info)
{
	info->pgoff = vma->vm_pgoff;
	info->len = vma->vm_end - vma->vm_start;
	info->writable = !!(vma->vm_flags & VM_WRITE);
	vm_flags_clear(vma, VM_MAYWRITE);
}

/* --- sysfs and debugfs trampolines ---------------------------------------- */

static ssize_t mic_attr_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct mic_shim_dev *sd = dev_get_drvdata(dev);

	return mic_rs_attr_show(sd->rs, attr - mic_dev_attrs, buf, PAGE_SIZE);
}

static ssize_t mic_attr_store(struct device *dev, struct device_attribute *attr,
			      const char *buf, size_t count)
{
	struct mic_shim_dev *sd = dev_get_drvdata(dev);

	return mic_rs_attr_store(sd->rs, attr - mic_dev_attrs, buf, count);
}

static int mic_dbg_show(struct seq_file *s, void *unused)
{
	struct mic_shim_dbg *d = s->private;

	return mic_rs_debugfs_show(d->sd->rs, d->index, s);
}

static int mic_dbg_open(struct inode *inode, struct file *file)
{
	return single_open(file, mic_dbg_show, inode->i_private);
}

static const struct file_operations mic_dbg_fops = {
	.owner = THIS_MODULE,
	.open = mic_dbg_open,
	.read = seq_read,
	.llseek = seq_lseek,
	.release = single_release,
};

/* --- /dev/micN ------------------------------------------------------------- */

struct mic_shim_file {
	struct mic_shim_dev *sd;
	void *rs_file;
};

static int mic_fd_open(struct inode *inode, struct file *file)
{
	struct mic_shim_dev *sd = container_of(inode->i_cdev, struct mic_shim_dev, cdev);
	struct mic_shim_file *f;
	int err;

	f = kzalloc(sizeof(*f), GFP_KERNEL);
	if (!f)
		return -ENOMEM;
	err = mic_rs_open(sd->rs, &f->rs_file);
	if (err) {
		kfree(f);
		return err;
	}
	kref_get(&sd->ref);
	f->sd = sd;
	file->private_data = f;
	return 0;
}

static int mic_fd_release(struct inode *inode, struct file *file)
{
	struct mic_shim_file *f = file->private_data;

	mic_rs_release(f->rs_file);
	kref_put(&f->sd->ref, mic_shim_release);
	kfree(f);
	return 0;
}

static long mic_fd_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct mic_shim_file *f = file->private_data;

	return mic_rs_ioctl(f->rs_file, cmd, arg);
}

static int mic_fd_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct mic_shim_file *f = file->private_data;

	return mic_rs_mmap(f->rs_file, vma);
}

static __poll_t mic_fd_poll(struct file *file, poll_table *wait)
{
	struct mic_shim_file *f = file->private_data;

	poll_wait(file, &f->sd->wq, wait);
	switch (mic_rs_poll(f->rs_file)) {
	case MIC_SHIM_POLL_READY:
		return EPOLLIN | EPOLLOUT;
	case MIC_SHIM_POLL_ERROR:
		return EPOLLERR;
	default:
		return 0;
	}
}

static const struct file_operations mic_fd_fops = {
	.owner = THIS_MODULE,
	.open = mic_fd_open,
	.release = mic_fd_release,
	.unlocked_ioctl = mic_fd_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.mmap = mic_fd_mmap,
	.poll = mic_fd_poll,
};

/* --- interrupts ------------------------------------------------------------ */

static irqreturn_t mic_hard_irq(int irq, void *data)
{
	struct mic_shim_dev *sd = data;

	return mic_rs_irq(sd->rs) ? IRQ_WAKE_THREAD : IRQ_NONE;
}

static irqreturn_t mic_thread_irq(int irq, void *data)
{
	struct mic_shim_dev *sd = data;

	mic_rs_irq_thread(sd->rs);
	return IRQ_HANDLED;
}

/* The original's order: MSI-X (8 vectors), then MSI, then INTx. */
static int mic_setup_irqs(struct mic_shim_dev *sd)
{
	struct pci_dev *pdev = sd->pdev;

	if (pci_alloc_irq_vectors(pdev, MIC_MSIX_VECTORS, MIC_MSIX_VECTORS, PCI_IRQ_MSIX) > 0)
		sd->irq_type = MIC_SHIM_IRQ_MSIX;
	else if (pci_alloc_irq_vectors(pdev, 1, 1, PCI_IRQ_MSI) > 0)
		sd->irq_type = MIC_SHIM_IRQ_MSI;
	else if (pci_alloc_irq_vectors(pdev, 1, 1, PCI_IRQ_INTX) > 0)
		sd->irq_type = MIC_SHIM_IRQ_INTX;
	else
		return -ENODEV;
	sd->irq = pci_irq_vector(pdev, 0);
	return sd->irq < 0 ? sd->irq : 0;
}

/* --- PCI driver ------------------------------------------------------------- */

static void mic_teardown_files(struct mic_shim_dev *sd)
{
	if (sd->cdev_added)
		cdev_del(&sd->cdev);
	debugfs_remove_recursive(sd->dbg_dir);
	if (sd->cdev_dev)
		device_destroy(mic_class, MKDEV(MAJOR(mic_devt), sd->id));
}

static int mic_probe(struct pci_dev *pdev, const struct pci_device_id *ent)
{
	struct mic_shim_probe info = {};
	struct mic_shim_dev *sd;
	unsigned int i;
	char name[16];
	int err;

	sd = kzalloc(sizeof(*sd), GFP_KERNEL);
	if (!sd)
		return -ENOMEM;
	kref_init(&sd->ref);
	init_waitqueue_head(&sd->wq);
	sd->pdev = pdev;
	sd->id = ida_alloc_max(&mic_ida, MIC_MAX_DEVS - 1, GFP_KERNEL);
	if (sd->id < 0) {
		err = sd->id;
		goto free_sd;
	}
	err = pcim_enable_device(pdev);
	if (err)
		goto free_id;
	pci_set_master(pdev);
	err = dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(64));
	if (err)
		goto free_id;
	err = pcim_iomap_regions(pdev, BIT(MIC_APERTURE_BAR) | BIT(MIC_MMIO_BAR), "mic");
	if (err)
		goto free_id;
	sd->mmio = pcim_iomap_table(pdev)[MIC_MMIO_BAR];
	sd->mmio_len = pci_resource_len(pdev, MIC_MMIO_BAR);
	/* The aperture is card memory: write-combining, as the original. */
	sd->aper = devm_ioremap_wc(&pdev->dev, pci_resource_start(pdev, MIC_APERTURE_BAR),
				   pci_resource_len(pdev, MIC_APERTURE_BAR));
	if (!sd->aper) {
		err = -ENOMEM;
		goto free_id;
	}
	sd->aper_len = pci_resource_len(pdev, MIC_APERTURE_BAR);
	err = mic_setup_irqs(sd);
	if (err)
		goto free_id;
	sd->dp = dma_alloc_coherent(&pdev->dev, PAGE_SIZE, &sd->dp_dma, GFP_KERNEL);
	if (!sd->dp) {
		err = -ENOMEM;
		goto free_vectors;
	}

	info.id = sd->id;
	info.device_id = pdev->device;
	info.revision = pdev->revision;
	info.irq_type = sd->irq_type;
	info.mmio_len = sd->mmio_len;
	info.aper_len = sd->aper_len;
	info.dp = sd->dp;
	info.dp_len = PAGE_SIZE;
	info.dp_dma = sd->dp_dma;
	err = mic_rs_probe(sd, &info, &sd->rs);
	if (err)
		goto free_dp;
	pci_set_drvdata(pdev, sd);

	sd->cdev_dev = device_create_with_groups(mic_class, &pdev->dev,
						 MKDEV(MAJOR(mic_devt), sd->id), sd,
						 mic_groups, "mic%d", sd->id);
	if (IS_ERR(sd->cdev_dev)) {
		err = PTR_ERR(sd->cdev_dev);
		sd->cdev_dev = NULL;
		goto remove_rs;
	}
	for (i = 0; i < MIC_SHIM_MAX_ATTRS && mic_attrs[i]; i++)
		sd->notify[i] = sysfs_get_dirent(sd->cdev_dev->kobj.sd, mic_attrs[i]->name);

	err = request_threaded_irq(sd->irq, mic_hard_irq, mic_thread_irq,
				   sd->irq_type == MIC_SHIM_IRQ_INTX ? IRQF_SHARED : 0,
				   "shutdown-interrupt", sd);
	if (err)
		goto remove_rs;

	snprintf(name, sizeof(name), "mic%d", sd->id);
	sd->dbg_dir = debugfs_create_dir(name, mic_dbg_root);
	for (i = 0; i < mic_dbg_count; i++) {
		sd->dbg[i].sd = sd;
		sd->dbg[i].index = i;
		debugfs_create_file(mic_dbg_spec[i].name, mic_dbg_spec[i].mode, sd->dbg_dir,
				    &sd->dbg[i], &mic_dbg_fops);
	}

	cdev_init(&sd->cdev, &mic_fd_fops);
	sd->cdev.owner = THIS_MODULE;
	err = cdev_add(&sd->cdev, MKDEV(MAJOR(mic_devt), sd->id), 1);
	if (err)
		goto free_irq;
	sd->cdev_added = true;
	return 0;

free_irq:
	free_irq(sd->irq, sd);
remove_rs:
	mic_teardown_files(sd);
	mic_rs_remove(sd->rs);
	for (i = 0; i < MIC_SHIM_MAX_ATTRS; i++)
		if (sd->notify[i])
			sysfs_put(sd->notify[i]);
free_dp:
	dma_free_coherent(&pdev->dev, PAGE_SIZE, sd->dp, sd->dp_dma);
free_vectors:
	pci_free_irq_vectors(pdev);
free_id:
	ida_free(&mic_ida, sd->id);
free_sd:
	kref_put(&sd->ref, mic_shim_release);
	return err;
}

static void mic_remove(struct pci_dev *pdev)
{
	struct mic_shim_dev *sd = pci_get_drvdata(pdev);
	unsigned int i;

	mic_teardown_files(sd);
	free_irq(sd->irq, sd);
	/*
	 * Stops the card (a reset unless offline), waits for the reset work
	 * and drops the Rust state; the notify nodes stay referenced until
	 * then, as the work notifies "state".
	 */
	mic_rs_remove(sd->rs);
	for (i = 0; i < MIC_SHIM_MAX_ATTRS; i++)
		if (sd->notify[i])
			sysfs_put(sd->notify[i]);
	wake_up_interruptible_all(&sd->wq);
	dma_free_coherent(&pdev->dev, PAGE_SIZE, sd->dp, sd->dp_dma);
	pci_free_irq_vectors(pdev);
	ida_free(&mic_ida, sd->id);
	kref_put(&sd->ref, mic_shim_release);
}

static const struct pci_device_id mic_pci_ids[] = {
	{ PCI_DEVICE(PCI_VENDOR_ID_INTEL, 0x2250) },
	{ PCI_DEVICE(PCI_VENDOR_ID_INTEL, 0x2251) },
	{ PCI_DEVICE(PCI_VENDOR_ID_INTEL, 0x2252) },
	{ PCI_DEVICE(PCI_VENDOR_ID_INTEL, 0x2253) },
	{ PCI_DEVICE(PCI_VENDOR_ID_INTEL, 0x2254) },
	{ PCI_DEVICE(PCI_VENDOR_ID_INTEL, 0x2255) },
	{ PCI_DEVICE(PCI_VENDOR_ID_INTEL, 0x2256) },
	{ PCI_DEVICE(PCI_VENDOR_ID_INTEL, 0x2257) },
	{ PCI_DEVICE(PCI_VENDOR_ID_INTEL, 0x2258) },
	{ PCI_DEVICE(PCI_VENDOR_ID_INTEL, 0x2259) },
	{ PCI_DEVICE(PCI_VENDOR_ID_INTEL, 0x225a) },
	{ PCI_DEVICE(PCI_VENDOR_ID_INTEL, 0x225b) },
	{ PCI_DEVICE(PCI_VENDOR_ID_INTEL, 0x225c) },
	{ PCI_DEVICE(PCI_VENDOR_ID_INTEL, 0x225d) },
	{ PCI_DEVICE(PCI_VENDOR_ID_INTEL, 0x225e) },
	{ }
};
MODULE_DEVICE_TABLE(pci, mic_pci_ids);

static struct pci_driver mic_driver = {
	.name = "mic",
	.id_table = mic_pci_ids,
	.probe = mic_probe,
	.remove = mic_remove,
};

/* --- module-wide registration --------------------------------------------- */

int mic_shim_register(const struct mic_shim_attr *sysfs, unsigned int nsysfs,
		      const struct mic_shim_attr *dbg, unsigned int ndbg)
{
	unsigned int i;
	int err;

	if (nsysfs > MIC_SHIM_MAX_ATTRS || ndbg > MIC_SHIM_MAX_ATTRS)
		return -EINVAL;
	for (i = 0; i < nsysfs; i++) {
		struct device_attribute *a = &mic_dev_attrs[i];

		sysfs_attr_init(&a->attr);
		a->attr.name = sysfs[i].name;
		a->attr.mode = sysfs[i].mode;
		a->show = mic_attr_show;
		a->store = (sysfs[i].mode & 0222) ? mic_attr_store : NULL;
		mic_attrs[i] = &a->attr;
	}
	mic_attrs[nsysfs] = NULL;
	mic_dbg_spec = dbg;
	mic_dbg_count = ndbg;

	err = alloc_chrdev_region(&mic_devt, 0, MIC_MAX_DEVS, "mic");
	if (err)
		return err;
	mic_class = class_create("mic");
	if (IS_ERR(mic_class)) {
		err = PTR_ERR(mic_class);
		goto unregister_chrdev;
	}
	mic_dbg_root = debugfs_create_dir(KBUILD_MODNAME, NULL);
	err = pci_register_driver(&mic_driver);
	if (err)
		goto destroy_class;
	return 0;

destroy_class:
	debugfs_remove_recursive(mic_dbg_root);
	class_destroy(mic_class);
unregister_chrdev:
	unregister_chrdev_region(mic_devt, MIC_MAX_DEVS);
	return err;
}

void mic_shim_unregister(void)
{
	pci_unregister_driver(&mic_driver);
	debugfs_remove_recursive(mic_dbg_root);
	class_destroy(mic_class);
	unregister_chrdev_region(mic_devt, MIC_MAX_DEVS);
	ida_destroy(&mic_ida);
}
