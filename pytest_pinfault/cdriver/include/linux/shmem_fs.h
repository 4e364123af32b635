/* pytest-pinfault C-driver bridge: <linux/shmem_fs.h> declares the kernel API subset in <pinfault/kapi.h>. */
#include <pinfault/kapi.h>
