// SPDX-License-Identifier: MIT
/* A test driver for the C-driver bridge: one ioctl per runtime behaviour under test. */
#include <linux/module.h>
#include <linux/miscdevice.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/mutex.h>

struct probe_obj { long a; long b; };

static DEFINE_MUTEX(probe_lock);
static void *probe_keep;
static int probe_opened;
module_param(probe_opened, int, 0444);

static noinline long probe_recurse(unsigned long n)
{
	volatile char pad[256];

	pad[0] = n;
	return probe_recurse(n + 1) + pad[0];	/* PROBE-RECURSE */
}

static long probe_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	char buf[16] = "0123456789abcdef";
	struct probe_obj *o;
	struct page *page;
	void *p;
	long n;

	switch (cmd) {
	case 1:			/* allocate and free */
		p = kmalloc(arg, GFP_KERNEL);
		if (!p)
			return -ENOMEM;
		kfree(p);
		return 0;
	case 2:			/* double free */
		p = kzalloc(32, GFP_KERNEL);
		if (!p)
			return -ENOMEM;
		kfree(p);
		kfree(p);
		return 0;
	case 3:			/* leak until module unload */
		probe_keep = kmalloc(48, GFP_KERNEL);
		return probe_keep ? 0 : -ENOMEM;
	case 4:
		o = NULL;
		return o->b;		/* PROBE-NULL */
	case 5:
		o = ERR_PTR(-ENOMEM);
		return o->a;		/* PROBE-ERRPTR */
	case 6:
		BUG_ON(arg == 6);	/* PROBE-BUG */
		return 0;
	case 7:
		WARN_ON(arg == 7);	/* PROBE-WARN */
		return 0;
	case 8:
		mutex_unlock(&probe_lock);
		return 0;
	case 9:
		return copy_to_user((void __user *)arg, buf, sizeof(buf));
	case 10:		/* pin one page long-term, inspect it, unpin */
		n = pin_user_pages_fast(arg, 1, FOLL_WRITE | FOLL_LONGTERM, &page);
		if (n != 1)
			return n < 0 ? n : -EFAULT;
		n = folio_nr_pages(page_folio(page)) * 1000 + page_count(page) / 1024;
		unpin_user_page(page);
		return n;
	case 11:		/* pin and keep: a long-term hold outliving the call */
		n = get_user_pages_fast(arg, 1, FOLL_WRITE, &page);
		if (n == 1)
			probe_keep = page;
		return n;
	case 12:
		put_page(probe_keep);
		probe_keep = NULL;
		return 0;
	case 15:		/* build an sg table of arg entries, walk it, free it (or keep it: arg < 0) */
	{
		static struct sg_table keep;
		struct sg_table t;
		struct scatterlist *s;
		unsigned int i, walked = 0;
		long nents = (long)arg < 0 ? -(long)arg : (long)arg;
		int ret = sg_alloc_table(&t, nents, GFP_KERNEL);

		if (ret)
			return ret;
		for_each_sgtable_sg(&t, s, i)
			walked++;
		if ((long)arg < 0)
			keep = t;
		else
			sg_free_table(&t);
		return walked;
	}
	case 16:		/* a driver-declared fault site */
		return pinfault_fault_point("probe.setup");
	case 17:		/* a CPU view never unmapped */
		n = pin_user_pages_fast(arg, 1, FOLL_WRITE, &page);
		if (n != 1)
			return -EFAULT;
		p = kmap_local_page(page);
		n = *(char *)p;
		unpin_user_page(page);
		return n;
	case 18:
		return probe_recurse(arg);
	case 19:
		return 100 / (long)arg;		/* PROBE-DIV */
	case 20:		/* RDMA style: charge mm->pinned_vm directly (arg < 0: then fail) */
		atomic64_add(4, &current->mm->pinned_vm);
		if ((long)arg < 0)
			return -ENOMEM;	/* forgets to give it back */
		return atomic64_read(&current->mm->pinned_vm);
	case 21:
		atomic64_sub(4, &current->mm->pinned_vm);
		return 0;
	case 22:
		mmgrab(current->mm);
		return 0;
	case 23:
		mmdrop(current->mm);
		return 0;
	case 24:		/* fget without fput */
		return fget(arg) ? 0 : -EBADF;
	case 25:		/* an interruptible wait: fatal first, then any signal */
		if (fatal_signal_pending(current))
			return -EINTR;
		if (signal_pending(current))
			return -ERESTARTSYS;
		return 0;
	case 26:		/* mmap_read_lock_killable: -EINTR under SIGKILL */
		n = mmap_read_lock_killable(current->mm);
		if (n)
			return n;
		mmap_read_unlock(current->mm);
		return 0;
	case 27: {		/* signal_pending of a task_struct that is not current */
		struct task_struct other = { .pid = 4242 };

		return signal_pending(&other);	/* PROBE-OTHER-TASK */
	}
	case 14:		/* retry an allocation for ever (a livelock under a persistent fault) */
		while (!(p = kmalloc(64, GFP_KERNEL)))
			cond_resched();		/* PROBE-RETRY */
		kfree(p);
		return 0;
	case 13:		/* read a struct page field directly */
		n = pin_user_pages_fast(arg, 1, FOLL_WRITE, &page);
		if (n != 1)
			return -EFAULT;
		n = page->__pf_opaque[0];	/* PROBE-PAGE */
		return n;
	}
	return -ENOTTY;
}

static ssize_t probe_read(struct file *file, char __user *buf, size_t count, loff_t *pos)
{
	static const char msg[] = "probe says hi";
	size_t n = min_t(size_t, count, sizeof(msg) - 1);

	if (copy_to_user(buf, msg, n))
		return -EFAULT;
	*pos += n;
	return n;
}

static ssize_t probe_write(struct file *file, const char __user *buf, size_t count, loff_t *pos)
{
	char tmp[8];

	if (count > sizeof(tmp))
		return -EINVAL;
	if (copy_from_user(tmp, buf, count))
		return -EFAULT;
	return count;
}

static int probe_open(struct inode *inode, struct file *file)
{
	probe_opened++;
	return 0;
}

static const struct file_operations probe_fops = {
	.owner = THIS_MODULE,
	.open = probe_open,
	.read = probe_read,
	.write = probe_write,
	.unlocked_ioctl = probe_ioctl,
};

static struct miscdevice probe_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "probe",
	.fops = &probe_fops,
};

static int __init probe_init(void)
{
	return misc_register(&probe_misc);
}

static void __exit probe_exit(void)
{
#ifndef PROBE_NO_DEREGISTER
	misc_deregister(&probe_misc);
#endif
}

module_init(probe_init);
module_exit(probe_exit);
MODULE_LICENSE("GPL");
