// SPDX-License-Identifier: MIT
/*
 * pinbuf: register user buffers for device DMA (an example for the pytest-pinfault
 * C-driver bridge, written in the style of an out-of-tree char driver).
 *
 * PINBUF_REGISTER pins [addr, addr+len) long-term with pin_user_pages_fast() in
 * batches, charges the pages to the caller's locked_vm, builds an sg table from the
 * pages and DMA-maps it for the device.  PINBUF_UNREGISTER and release() undo all of it.
 *
 * Buggy variants, selected with -D (each one is caught by the contract checker):
 *   PINBUF_BUG_LEAK_ON_ERROR  the error path forgets the batches already pinned (rule 2/4)
 *   PINBUF_BUG_NO_LONGTERM    pins without FOLL_LONGTERM: pages stay in CMA/movable (rule 1)
 *   PINBUF_BUG_NO_UNACCOUNT   unregister does not give locked_vm back (rule 9)
 *   PINBUF_BUG_LOCK_HELD      an error path returns with the mutex held (rule 11, lockdep)
 *   PINBUF_BUG_NULL_DEREF     unregister of an unknown id dereferences NULL (a driver crash)
 *   PINBUF_BUG_NO_UNMAP       unregister never DMA-unmaps the table (rule 4: a mapping left)
 */
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/miscdevice.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/mutex.h>
#include <linux/scatterlist.h>
#include <linux/dma-mapping.h>
#include <linux/sched/mm.h>
#include <linux/pinbuf.h>

#define PINBUF_BATCH 64

#ifdef PINBUF_BUG_NO_LONGTERM
#define PINBUF_GUP_FLAGS 0
#else
#define PINBUF_GUP_FLAGS FOLL_LONGTERM
#endif

static unsigned int max_pages = 65536;
module_param(max_pages, uint, 0644);
MODULE_PARM_DESC(max_pages, "largest region, in pages");

struct pinbuf_region_k {
	struct list_head node;
	u32 id;
	unsigned long npages;
	struct page **pages;
	struct sg_table sgt;
	struct mm_struct *mm;
	bool writable;
};

struct pinbuf_ctx {
	struct mutex lock;
	struct list_head regions;
	u32 next_id;
	unsigned int nr_regions;
	struct device *dev;
};

static struct miscdevice pinbuf_misc;

static int pinbuf_open(struct inode *inode, struct file *file)
{
	struct pinbuf_ctx *ctx = kzalloc(sizeof(*ctx), GFP_KERNEL);

	if (!ctx)
		return -ENOMEM;
	mutex_init(&ctx->lock);
	INIT_LIST_HEAD(&ctx->regions);
	ctx->next_id = 1;
	ctx->dev = pinbuf_misc.this_device;
	file->private_data = ctx;
	return 0;
}

static void pinbuf_free_region(struct pinbuf_ctx *ctx, struct pinbuf_region_k *r)
{
#ifndef PINBUF_BUG_NO_UNMAP
	dma_unmap_sgtable(ctx->dev, &r->sgt, r->writable ? DMA_BIDIRECTIONAL : DMA_TO_DEVICE, 0);
#endif
	sg_free_table(&r->sgt);
	unpin_user_pages_dirty_lock(r->pages, r->npages, r->writable);
#ifndef PINBUF_BUG_NO_UNACCOUNT
	account_locked_vm(r->mm, r->npages, false);
#endif
	mmdrop(r->mm);
	kvfree(r->pages);
	kfree(r);
}

static long pinbuf_register(struct pinbuf_ctx *ctx, void __user *uarg)
{
	struct pinbuf_region req;
	struct pinbuf_region_k *r;
	unsigned long npages, pinned = 0;
	unsigned int gup_flags = PINBUF_GUP_FLAGS;
	long ret;

	if (copy_from_user(&req, uarg, sizeof(req)))
		return -EFAULT;
	if (!req.len || !PAGE_ALIGNED(req.addr) || !PAGE_ALIGNED(req.len) || req.flags & ~PINBUF_F_WRITE)
		return -EINVAL;
	npages = req.len >> PAGE_SHIFT;
	if (npages > max_pages)
		return -E2BIG;

	mutex_lock(&ctx->lock);
	if (ctx->nr_regions >= PINBUF_MAX_REGIONS) {
		ret = -ENOSPC;
#ifdef PINBUF_BUG_LOCK_HELD
		return ret;
#else
		goto out_unlock;
#endif
	}
	r = kzalloc(sizeof(*r), GFP_KERNEL);
	if (!r) {
		ret = -ENOMEM;
		goto out_unlock;
	}
	r->writable = req.flags & PINBUF_F_WRITE;
	if (r->writable)
		gup_flags |= FOLL_WRITE;
	r->pages = kvmalloc_array(npages, sizeof(*r->pages), GFP_KERNEL);
	if (!r->pages) {
		ret = -ENOMEM;
		goto out_free;
	}
	r->mm = current->mm;
	mmgrab(r->mm);
	ret = account_locked_vm(r->mm, npages, true);
	if (ret)
		goto out_drop;

	while (pinned < npages) {
		int n = min_t(unsigned long, npages - pinned, PINBUF_BATCH);

		ret = pin_user_pages_fast(req.addr + (pinned << PAGE_SHIFT), n, gup_flags, r->pages + pinned);
		if (ret <= 0) {
			if (ret == 0)
				ret = -EFAULT;
			goto out_unpin;
		}
		pinned += ret;
	}
	r->npages = npages;

	ret = sg_alloc_table_from_pages(&r->sgt, r->pages, npages, 0, npages << PAGE_SHIFT, GFP_KERNEL);
	if (ret)
		goto out_unpin;
	ret = dma_map_sgtable(ctx->dev, &r->sgt, r->writable ? DMA_BIDIRECTIONAL : DMA_TO_DEVICE, 0);
	if (ret)
		goto out_sg;

	r->id = ctx->next_id++;
	req.id = r->id;
	req.nr_segments = r->sgt.nents;
	if (copy_to_user(uarg, &req, sizeof(req))) {
		ret = -EFAULT;
		goto out_unmap;
	}
	list_add_tail(&r->node, &ctx->regions);
	ctx->nr_regions++;
	mutex_unlock(&ctx->lock);
	return 0;

out_unmap:
	dma_unmap_sgtable(ctx->dev, &r->sgt, r->writable ? DMA_BIDIRECTIONAL : DMA_TO_DEVICE, 0);
out_sg:
	sg_free_table(&r->sgt);
out_unpin:
#ifdef PINBUF_BUG_LEAK_ON_ERROR
	/* forgets the batches pinned so far */
#else
	if (pinned)
		unpin_user_pages(r->pages, pinned);
#endif
	account_locked_vm(r->mm, npages, false);
out_drop:
	mmdrop(r->mm);
	kvfree(r->pages);
out_free:
	kfree(r);
out_unlock:
	mutex_unlock(&ctx->lock);
	return ret;
}

static struct pinbuf_region_k *pinbuf_find(struct pinbuf_ctx *ctx, u32 id)
{
	struct pinbuf_region_k *r;

	list_for_each_entry(r, &ctx->regions, node)
		if (r->id == id)
			return r;
	return NULL;
}

static long pinbuf_unregister(struct pinbuf_ctx *ctx, u32 __user *uid)
{
	struct pinbuf_region_k *r;
	u32 id;

	if (get_user(id, uid))
		return -EFAULT;
	mutex_lock(&ctx->lock);
	r = pinbuf_find(ctx, id);
#ifndef PINBUF_BUG_NULL_DEREF
	if (!r) {
		mutex_unlock(&ctx->lock);
		return -ENOENT;
	}
#endif
	list_del(&r->node);
	ctx->nr_regions--;
	mutex_unlock(&ctx->lock);
	pinbuf_free_region(ctx, r);
	return 0;
}

static long pinbuf_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct pinbuf_ctx *ctx = file->private_data;

	switch (cmd) {
	case PINBUF_REGISTER:
		return pinbuf_register(ctx, (void __user *)arg);
	case PINBUF_UNREGISTER:
		return pinbuf_unregister(ctx, (u32 __user *)arg);
	default:
		return -ENOTTY;
	}
}

static int pinbuf_release(struct inode *inode, struct file *file)
{
	struct pinbuf_ctx *ctx = file->private_data;
	struct pinbuf_region_k *r, *tmp;

	list_for_each_entry_safe(r, tmp, &ctx->regions, node) {
		list_del(&r->node);
		pinbuf_free_region(ctx, r);
	}
	mutex_destroy(&ctx->lock);
	kfree(ctx);
	return 0;
}

static const struct file_operations pinbuf_fops = {
	.owner = THIS_MODULE,
	.open = pinbuf_open,
	.release = pinbuf_release,
	.unlocked_ioctl = pinbuf_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice pinbuf_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "pinbuf",
	.fops = &pinbuf_fops,
};

static int __init pinbuf_init(void)
{
	int ret = misc_register(&pinbuf_misc);

	if (ret) {
		pr_err("pinbuf: misc_register failed: %d\n", ret);
		return ret;
	}
	ret = dma_set_mask_and_coherent(pinbuf_misc.this_device, DMA_BIT_MASK(64));
	if (ret) {
		misc_deregister(&pinbuf_misc);
		return ret;
	}
	pr_info("pinbuf: ready\n");
	return 0;
}

static void __exit pinbuf_exit(void)
{
	misc_deregister(&pinbuf_misc);
}

module_init(pinbuf_init);
module_exit(pinbuf_exit);
MODULE_LICENSE("Dual MIT/GPL");
MODULE_DESCRIPTION("register user buffers for DMA (pytest-pinfault example)");
