// SPDX-License-Identifier: MIT
/* The C-driver bridge benchmark's driver: pin and unpin a user range in batches. */
#include <linux/module.h>
#include <linux/miscdevice.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/slab.h>

#define BATCH 512

static unsigned long nr_pages = 1024;
module_param(nr_pages, ulong, 0644);

static long bench_ioctl(struct file *file, unsigned int cmd, unsigned long addr)
{
	struct page **pages = kvmalloc_array(BATCH, sizeof(*pages), GFP_KERNEL);
	unsigned long done = 0;
	long ret = 0;

	if (!pages)
		return -ENOMEM;
	while (done < nr_pages) {
		int n = min_t(unsigned long, nr_pages - done, BATCH);

		ret = pin_user_pages_fast(addr + (done << PAGE_SHIFT), n, FOLL_WRITE | FOLL_LONGTERM, pages);
		if (ret <= 0)
			break;
		unpin_user_pages(pages, ret);
		done += ret;
	}
	kvfree(pages);
	return ret < 0 ? ret : done;
}

static const struct file_operations bench_fops = { .owner = THIS_MODULE, .unlocked_ioctl = bench_ioctl };
static struct miscdevice bench_misc = { .minor = MISC_DYNAMIC_MINOR, .name = "bench", .fops = &bench_fops };

static int __init bench_init(void) { return misc_register(&bench_misc); }
static void __exit bench_exit(void) { misc_deregister(&bench_misc); }
module_init(bench_init);
module_exit(bench_exit);
MODULE_LICENSE("GPL");
