// SPDX-License-Identifier: MIT
/* A character device the classic way: a chrdev region, a cdev embedded in the device
 * structure (found again in open() with container_of), a class and a device node. */
#include <linux/module.h>
#include <linux/fs.h>
#include <linux/cdev.h>
#include <linux/device.h>
#include <linux/slab.h>

struct chardev {
	struct cdev cdev;
	long opens;
};

static dev_t chardev_devt;
static struct chardev *chardev;
static struct class *chardev_class;

static int chardev_open(struct inode *inode, struct file *file)
{
	struct chardev *cd = container_of(inode->i_cdev, struct chardev, cdev);

	cd->opens++;
	file->private_data = cd;
	return 0;
}

static long chardev_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct chardev *cd = file->private_data;

	return cmd == 1 ? cd->opens : MINOR(file_inode(file)->i_rdev);
}

static const struct file_operations chardev_fops = {
	.owner = THIS_MODULE,
	.open = chardev_open,
	.unlocked_ioctl = chardev_ioctl,
};

static int __init chardev_init(void)
{
	struct device *dev;
	int ret;

	ret = alloc_chrdev_region(&chardev_devt, 3, 1, "chardev");
	if (ret)
		return ret;
	chardev = kzalloc(sizeof(*chardev), GFP_KERNEL);
	if (!chardev) {
		ret = -ENOMEM;
		goto err_region;
	}
	cdev_init(&chardev->cdev, &chardev_fops);
	ret = cdev_add(&chardev->cdev, chardev_devt, 1);
	if (ret)
		goto err_free;
	chardev_class = class_create("chardev");
	if (IS_ERR(chardev_class)) {
		ret = PTR_ERR(chardev_class);
		goto err_cdev;
	}
	dev = device_create(chardev_class, NULL, chardev_devt, NULL, "chardev%d", MINOR(chardev_devt));
	if (IS_ERR(dev)) {
		ret = PTR_ERR(dev);
		goto err_class;
	}
	return 0;
err_class:
	class_destroy(chardev_class);
err_cdev:
	cdev_del(&chardev->cdev);
err_free:
	kfree(chardev);
err_region:
	unregister_chrdev_region(chardev_devt, 1);
	return ret;
}

static void __exit chardev_exit(void)
{
	device_destroy(chardev_class, chardev_devt);
	class_destroy(chardev_class);
	cdev_del(&chardev->cdev);
	kfree(chardev);
#ifndef CHARDEV_LEAK_REGION
	unregister_chrdev_region(chardev_devt, 1);
#endif
}

module_init(chardev_init);
module_exit(chardev_exit);
MODULE_LICENSE("GPL");
