/* pytest-pinfault C-driver bridge: <linux/mmap_lock.h> declares the kernel API subset in <pinfault/kapi.h>. */
#include <pinfault/kapi.h>
