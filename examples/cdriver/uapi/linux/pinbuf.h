/* SPDX-License-Identifier: MIT */
/* pinbuf: an out-of-tree style char device that registers user buffers for DMA
 * (the pytest-pinfault C-driver bridge's example). */
#ifndef _UAPI_LINUX_PINBUF_H
#define _UAPI_LINUX_PINBUF_H

#include <linux/types.h>
#include <linux/ioctl.h>

#define PINBUF_MAX_REGIONS 16

struct pinbuf_region {
	__u64 addr;		/* in: page-aligned user address */
	__u64 len;		/* in: page-aligned length */
	__u32 flags;		/* in: PINBUF_F_* */
	__u32 id;		/* out: region id for PINBUF_UNREGISTER */
	__u32 nr_segments;	/* out: DMA segments after merging */
	__u32 __pad;
};

#define PINBUF_F_WRITE 0x1	/* the device writes to the buffer */

#define PINBUF_REGISTER   _IOWR('P', 0x01, struct pinbuf_region)
#define PINBUF_UNREGISTER _IOW('P', 0x02, __u32)

#endif
