/* pytest-pinfault C-driver bridge: <linux/mm_types.h> declares the kernel API subset in <pinfault/kapi.h>. */
#include <pinfault/kapi.h>
