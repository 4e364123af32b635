// SPDX-License-Identifier: MIT
/* The buggy twin of pinbuf.c: the REGISTER error path forgets the batches it pinned. */
#define PINBUF_BUG_LEAK_ON_ERROR 1
#include "pinbuf.c"
