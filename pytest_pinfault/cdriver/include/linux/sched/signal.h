/* pytest-pinfault C-driver bridge. */
#include <pinfault/kapi.h>
