/* pytest-pinfault C-driver bridge: <linux/log2.h> declares the kernel API subset in <pinfault/kapi.h>. */
#include <pinfault/kapi.h>
