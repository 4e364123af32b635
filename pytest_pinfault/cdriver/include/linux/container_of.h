/* pytest-pinfault C-driver bridge: <linux/container_of.h> declares the kernel API subset in <pinfault/kapi.h>. */
#include <pinfault/kapi.h>
