/* pytest-pinfault C-driver bridge: <linux/moduleparam.h> declares the kernel API subset in <pinfault/kapi.h>. */
#include <pinfault/kapi.h>
