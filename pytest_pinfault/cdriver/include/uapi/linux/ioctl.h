/* pytest-pinfault C-driver bridge: uapi <linux/ioctl.h>; the encoding itself is in
 * <asm-generic/ioctl.h> next to it (the one definition, shared with <pinfault/kapi.h>). */
#ifndef PINFAULT_UAPI_IOCTL_H
#define PINFAULT_UAPI_IOCTL_H
#include "../asm-generic/ioctl.h"
#endif
