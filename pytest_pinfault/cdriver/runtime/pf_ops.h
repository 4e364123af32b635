/*
 * pytest-pinfault C-driver bridge: the table of callbacks into the fake mm.
 * Plain C types only: both runtime halves include it (kruntime.c is built against the
 * bridge's kernel headers, trampoline.c against libc) and bridge.py declares the same
 * table to cffi.  Python fills it when a driver is loaded.
 */
#ifndef PINFAULT_PF_OPS_H
#define PINFAULT_PF_OPS_H

struct pf_ops {
	/* slab: p is the C memory just allocated (NULL: refused before allocating);
	 * returns 0 to keep it, -1 when the allocation fails (kmalloc fault site, limits) */
	int (*slab_alloc)(void *p, unsigned long n, unsigned long size, unsigned int gfp, int kind, void *caller);
	/* returns 1 when p was live (the runtime frees it), 0 otherwise (warning recorded) */
	int (*slab_free)(void *p, void *caller);
	long (*gup)(int op, void *mm, unsigned long start, unsigned long nr, unsigned int flags, void **pages);
	void (*unpin)(int op, void **handles, unsigned long n, int dirty);
	long (*memfd_pin)(void *file, long long start, long long end, void **folios, unsigned int max,
			  unsigned long *offset);
	long (*page_op)(int op, unsigned long pfn, long arg);
	unsigned long (*ucopy)(int dir, void *kaddr, unsigned long uaddr, unsigned long n);
	long (*mm_op)(int op, void *mm, long arg);
	long (*file_op)(int op, void *file, long a, long b);
	long (*dev_op)(int op, void *obj, long a, long b);
	void (*log)(int level, const char *msg);
	void (*warn)(const char *file, int line, const char *cond, const char *msg, void *caller);
	long (*pagemap)(int op, unsigned long *pfns, unsigned long n, void *buf);
};

extern struct pf_ops pf_ops;
extern volatile int pf_exc_pending;
/* trampoline.c */
extern void pf_unwind(int code) __attribute__((__noreturn__));
extern void pf_set_bug(const char *file, int line, const char *cond);
extern void *pf_raw_alloc(unsigned long size, int zero);
extern void pf_raw_free(void *p);
extern int pf_vsnprintf(char *buf, unsigned long size, const char *fmt, __builtin_va_list ap);

#define PF_UNWIND_BUG 1000
#define PF_UNWIND_PYEXC 1001

/* gup ops */
enum { PF_GUP_PIN_FAST, PF_GUP_PIN, PF_GUP_PIN_UNLOCKED, PF_GUP_PIN_REMOTE, PF_GUP_GET_FAST,
       PF_GUP_GET, PF_GUP_GET_UNLOCKED, PF_GUP_GET_REMOTE };
/* unpin ops */
enum { PF_UNPIN_PAGES, PF_UNPIN_PAGES_DIRTY, PF_UNPIN_FOLIOS, PF_UNPIN_PAGE_RANGE_DIRTY,
       PF_UNPIN_USER_FOLIO };
/* page ops */
enum { PF_PAGE_FOLIO, PF_FOLIO_NR_PAGES, PF_FOLIO_INDEX, PF_FOLIO_REFCOUNT, PF_FOLIO_MAYBE_PINNED,
       PF_FOLIO_HUGETLB, PF_FOLIO_LONGTERM_PINNABLE, PF_FOLIO_GET, PF_FOLIO_PUT, PF_FOLIO_DIRTY,
       PF_ALLOC_PAGES, PF_FREE_PAGES };
/* ucopy dirs */
enum { PF_FROM_USER, PF_TO_USER, PF_CLEAR_USER, PF_ACCESS_OK };
/* mm ops */
enum { PF_MM_ACCOUNT_INC, PF_MM_ACCOUNT_DEC, PF_MM_LOCKED_VM, PF_MM_PINNED_VM_ADD, PF_MM_GRAB,
       PF_MM_DROP, PF_MM_GET, PF_MM_PUT, PF_RLIMIT, PF_CAPABLE, PF_PIN_SAVE, PF_PIN_RESTORE,
       PF_MM_CURRENT, PF_SIGNAL_PENDING };
/* file ops */
enum { PF_FGET, PF_FPUT, PF_GET_FILE, PF_SHMEM_FILE, PF_HUGEPAGES_FILE, PF_MEMFD_FCNTL,
       PF_HSTATE_ORDER, PF_READ_MAPPING_PAGE, PF_FIND_GET_PAGE, PF_FD_ALLOC, PF_FD_INSTALL,
       PF_FD_PUT_UNUSED, PF_I_SIZE, PF_SHMEM_MAPPING, PF_FILEMAP_GET_FOLIO };
/* device / dma-buf ops */
enum { PF_MISC_REGISTER, PF_MISC_DEREGISTER, PF_DMA_BUF_EXPORT, PF_DMA_BUF_FD, PF_DMA_BUF_PUT,
       PF_DMA_BUF_GET, PF_DMA_MAP, PF_DMA_UNMAP, PF_DMA_BUF_GET_FD, PF_FAULT_POINT,
       PF_CHRDEV_REGISTER, PF_CHRDEV_UNREGISTER, PF_CDEV_ADD, PF_CDEV_DEL, PF_DEVICE_CREATE, PF_DEVICE_DESTROY,
       PF_DMA_MAP_PAGE, PF_DMA_UNMAP_PAGE };
/* kmap ops */
enum { PF_KMAP_FILL, PF_KMAP_FLUSH };

#endif
