/*
 * pytest-pinfault C-driver bridge: the kernel half of the runtime.
 *
 * Built against the bridge's own kernel headers (<pinfault/kapi.h>), like the driver.
 * Each kernel API function here does what the kernel's does by calling back into the
 * fake mm through pf_ops; every function that can fail in the kernel fails through the
 * fake mm's fault sites (kmalloc, alloc_pages, the GUP and memfd sites ...), so fault
 * matrices reach the driver's error paths exactly where the kernel would fail.
 * Written for this project; no kernel code is copied.
 */
#include <pinfault/kapi.h>
#include "pf_ops.h"

struct pf_ops pf_ops;
volatile int pf_exc_pending;

/* After a callback: a Python exception (a livelock budget, a model error) unwinds the
 * driver back to the entry call, which re-raises it. */
#define PF_CHECK() do { if (unlikely(pf_exc_pending)) pf_unwind(PF_UNWIND_PYEXC); } while (0)
#define CALLER() __builtin_return_address(0)

/* The driver's call chain at a fault site, for the bridge to name in fault records and
 * to match caller= filters: return addresses up the frame-pointer chain, while they lie
 * inside this shared object ([pf_so_lo, pf_so_hi), set by the loader). */
unsigned long pf_cstack[16];
int pf_cstack_n;
unsigned long pf_so_lo, pf_so_hi;

static __attribute__((__noinline__)) void pf_capture(void)
{
	unsigned long *fp = __builtin_frame_address(0);
	int n = 0;

	while (fp && n < 16 && !((unsigned long)fp & 7)) {
		unsigned long ret = fp[1];

		if (ret < pf_so_lo || ret >= pf_so_hi)
			break;
		pf_cstack[n++] = ret;
		if ((unsigned long *)fp[0] <= fp)
			break;
		fp = (unsigned long *)fp[0];
	}
	pf_cstack_n = n;
}

/* ------------------------------------------------------------------ slab */
#define PF_SLAB_KMALLOC 0
#define PF_SLAB_KVMALLOC 1
#define PF_SLAB_KERNEL 2

static void *pf_slab(size_t n, size_t size, gfp_t gfp, int kind, int zero, void *caller)
{
	size_t total;
	void *p;
	int rc;

	pf_capture();

	if (check_mul_overflow(n, size, &total))
		return NULL;
	if (total == 0)
		return ZERO_SIZE_PTR;
	if (total > (size_t)INT_MAX || (kind == PF_SLAB_KMALLOC && total > KMALLOC_MAX_SIZE)) {
		pf_ops.slab_alloc(NULL, n, size, gfp, kind, caller);   /* the model's warning, if any */
		PF_CHECK();
		return NULL;
	}
	p = pf_raw_alloc(total, zero || (gfp & __GFP_ZERO));
	if (!p)
		return NULL;
	rc = pf_ops.slab_alloc(p, n, size, gfp, kind, caller);
	if (rc) {
		pf_raw_free(p);
		PF_CHECK();
		return NULL;
	}
	PF_CHECK();
	return p;
}

void *kmalloc(size_t size, gfp_t flags) { return pf_slab(1, size, flags, PF_SLAB_KMALLOC, 0, CALLER()); }
void *kzalloc(size_t size, gfp_t flags) { return pf_slab(1, size, flags, PF_SLAB_KMALLOC, 1, CALLER()); }
void *kmalloc_array(size_t n, size_t size, gfp_t flags) { return pf_slab(n, size, flags, PF_SLAB_KMALLOC, 0, CALLER()); }
void *kcalloc(size_t n, size_t size, gfp_t flags) { return pf_slab(n, size, flags, PF_SLAB_KMALLOC, 1, CALLER()); }
void *kvmalloc(size_t size, gfp_t flags) { return pf_slab(1, size, flags, PF_SLAB_KVMALLOC, 0, CALLER()); }
void *kvzalloc(size_t size, gfp_t flags) { return pf_slab(1, size, flags, PF_SLAB_KVMALLOC, 1, CALLER()); }
void *kvmalloc_array(size_t n, size_t size, gfp_t flags) { return pf_slab(n, size, flags, PF_SLAB_KVMALLOC, 0, CALLER()); }
void *kvcalloc(size_t n, size_t size, gfp_t flags) { return pf_slab(n, size, flags, PF_SLAB_KVMALLOC, 1, CALLER()); }
void *vmalloc(unsigned long size) { return pf_slab(1, size, GFP_KERNEL, PF_SLAB_KVMALLOC, 0, CALLER()); }
void *vzalloc(unsigned long size) { return pf_slab(1, size, GFP_KERNEL, PF_SLAB_KVMALLOC, 1, CALLER()); }

static void pf_free(const void *p, void *caller)
{
	if (ZERO_OR_NULL_PTR(p))
		return;
	if (pf_ops.slab_free((void *)p, caller))
		pf_raw_free((void *)p);
	PF_CHECK();
}

void kfree(const void *p) { pf_free(p, CALLER()); }
void kvfree(const void *p) { pf_free(p, CALLER()); }
void vfree(const void *p) { pf_free(p, CALLER()); }

void *kmemdup(const void *src, size_t len, gfp_t gfp)
{
	void *p = pf_slab(1, len, gfp, PF_SLAB_KMALLOC, 0, CALLER());
	if (p && p != ZERO_SIZE_PTR)
		memcpy(p, src, len);
	return p;
}

char *kstrdup(const char *s, gfp_t gfp)
{
	size_t len;
	char *p;

	if (!s)
		return NULL;
	len = strlen(s) + 1;
	p = pf_slab(1, len, gfp, PF_SLAB_KMALLOC, 0, CALLER());
	if (p)
		memcpy(p, s, len);
	return p;
}

void *krealloc(const void *old, size_t new_size, gfp_t flags)
{
	void *p;

	if (!new_size) {
		pf_free(old, CALLER());
		return ZERO_SIZE_PTR;
	}
	p = pf_slab(1, new_size, flags, PF_SLAB_KMALLOC, 0, CALLER());
	if (p && !ZERO_OR_NULL_PTR(old)) {
		/* the runtime knows no object sizes: the model's slab copies what fits */
		long oldsize = pf_ops.dev_op(-1, (void *)old, 0, 0);
		PF_CHECK();
		memcpy(p, old, oldsize < (long)new_size ? (size_t)oldsize : new_size);
		pf_free(old, CALLER());
	}
	return p;
}

struct kmem_cache { unsigned int size; void (*ctor)(void *); const char *name; };

struct kmem_cache *kmem_cache_create(const char *name, unsigned int size, unsigned int align,
				     unsigned long flags, void (*ctor)(void *))
{
	struct kmem_cache *s = pf_slab(1, sizeof(*s), GFP_KERNEL, PF_SLAB_KERNEL, 1, CALLER());

	(void)align; (void)flags;
	if (s) {
		s->size = size;
		s->ctor = ctor;
		s->name = name;
	}
	return s;
}

void kmem_cache_destroy(struct kmem_cache *s) { pf_free(s, CALLER()); }

void *kmem_cache_alloc(struct kmem_cache *s, gfp_t flags)
{
	void *p = pf_slab(1, s->size, flags, PF_SLAB_KMALLOC, 0, CALLER());
	if (p && s->ctor)
		s->ctor(p);
	return p;
}

void *kmem_cache_zalloc(struct kmem_cache *s, gfp_t flags) { return pf_slab(1, s->size, flags, PF_SLAB_KMALLOC, 1, CALLER()); }
void kmem_cache_free(struct kmem_cache *s, void *obj) { (void)s; pf_free(obj, CALLER()); }

/* ------------------------------------------------------------------ printk, warnings */
int _printk(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int level = 4, n;

	if (fmt[0] == '\001' && fmt[1] >= '0' && fmt[1] <= '7') {
		level = fmt[1] - '0';
		fmt += 2;
	}
	va_start(ap, fmt);
	n = pf_vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	pf_ops.log(level, buf);
	PF_CHECK();
	return n;
}

void __pf_warn(const char *file, int line, const char *cond, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	buf[0] = 0;
	if (fmt) {
		va_start(ap, fmt);
		pf_vsnprintf(buf, sizeof(buf), fmt, ap);
		va_end(ap);
	}
	pf_ops.warn(file, line, cond, buf, CALLER());
	PF_CHECK();
}

void __pf_bug(const char *file, int line, const char *cond)
{
	pf_set_bug(file, line, cond);
	pf_unwind(PF_UNWIND_BUG);
}

void refcount_inc(refcount_t *r)
{
	if (r->refs <= 0)
		__pf_warn("refcount", 0, "refcount_t: addition on 0; use-after-free", NULL);
	r->refs++;
}

bool refcount_dec_and_test(refcount_t *r)
{
	if (r->refs <= 0) {
		__pf_warn("refcount", 0, "refcount_t: underflow; use-after-free", NULL);
		return false;
	}
	return --r->refs == 0;
}

/* ------------------------------------------------------------------ locks */
#define PF_MAX_HELD 64
static const void *pf_held[PF_MAX_HELD];
static const char *pf_held_name[PF_MAX_HELD];
static int pf_nr_held;
static void *pf_lock_caller;
#define LOCK_ENTRY() (pf_lock_caller = __builtin_return_address(0))

int pf_locks_held(void) { return pf_nr_held; }
const char *pf_lock_name(int i) { return i < pf_nr_held ? pf_held_name[i] : ""; }
void pf_locks_reset(void) { pf_nr_held = 0; }

static void pf_lock_warn(const char *what, const char *name)
{
	char buf[160];

	snprintf(buf, sizeof(buf), "%s: %s", what, name ? name : "?");
	pf_ops.warn("lockdep", 0, "lock imbalance", buf, pf_lock_caller);
	PF_CHECK();
}

static void pf_acquire(const void *lock, const char *name)
{
	int i;

	for (i = 0; i < pf_nr_held; i++)
		if (pf_held[i] == lock) {
			pf_lock_warn("possible recursive locking detected (self-deadlock)", name);
			return;
		}
	if (pf_nr_held < PF_MAX_HELD) {
		pf_held[pf_nr_held] = lock;
		pf_held_name[pf_nr_held++] = name;
	}
}

static void pf_release(const void *lock, const char *name)
{
	int i;

	for (i = pf_nr_held - 1; i >= 0; i--)
		if (pf_held[i] == lock) {
			for (; i < pf_nr_held - 1; i++) {
				pf_held[i] = pf_held[i + 1];
				pf_held_name[i] = pf_held_name[i + 1];
			}
			pf_nr_held--;
			return;
		}
	pf_lock_warn("bad unlock balance detected (releasing a lock that is not held)", name);
}

void __pf_mutex_init(struct mutex *m, const char *name) { m->__pf_locked = 0; m->__pf_name = name; }
void __pf_spin_lock_init(spinlock_t *l, const char *name) { l->__pf_locked = 0; l->__pf_name = name; }
void __pf_init_rwsem(struct rw_semaphore *s, const char *name) { s->__pf_readers = 0; s->__pf_writer = 0; s->__pf_name = name; }

void mutex_lock(struct mutex *m)
{
	LOCK_ENTRY();
	if (m->__pf_locked)
		pf_lock_warn("possible recursive locking detected (mutex already held)", m->__pf_name);
	m->__pf_locked = 1;
	pf_acquire(m, m->__pf_name);
}
int mutex_lock_interruptible(struct mutex *m) { mutex_lock(m); return 0; }
int mutex_lock_killable(struct mutex *m) { mutex_lock(m); return 0; }
int mutex_trylock(struct mutex *m)
{
	if (m->__pf_locked)
		return 0;
	mutex_lock(m);
	return 1;
}
void mutex_unlock(struct mutex *m)
{
	LOCK_ENTRY();
	if (!m->__pf_locked)
		pf_lock_warn("bad unlock balance detected (mutex not locked)", m->__pf_name);
	m->__pf_locked = 0;
	pf_release(m, m->__pf_name);
}
bool mutex_is_locked(struct mutex *m) { return m->__pf_locked; }
void mutex_destroy(struct mutex *m)
{
	LOCK_ENTRY();
	if (m->__pf_locked)
		pf_lock_warn("mutex_destroy of a locked mutex", m->__pf_name);
}
void spin_lock(spinlock_t *l)
{
	LOCK_ENTRY();
	if (l->__pf_locked)
		pf_lock_warn("spinlock recursion (lock already held)", l->__pf_name);
	l->__pf_locked = 1;
	pf_acquire(l, l->__pf_name);
}
void spin_unlock(spinlock_t *l)
{
	LOCK_ENTRY();
	if (!l->__pf_locked)
		pf_lock_warn("bad unlock balance detected (spinlock not locked)", l->__pf_name);
	l->__pf_locked = 0;
	pf_release(l, l->__pf_name);
}
void down_read(struct rw_semaphore *s)
{
	LOCK_ENTRY();
	if (s->__pf_writer)
		pf_lock_warn("down_read while the writer holds it (deadlock)", s->__pf_name);
	s->__pf_readers++;
	pf_acquire(s, s->__pf_name);
}
void up_read(struct rw_semaphore *s)
{
	LOCK_ENTRY();
	if (s->__pf_readers <= 0)
		pf_lock_warn("up_read of an rwsem not held for read", s->__pf_name);
	else
		s->__pf_readers--;
	pf_release(s, s->__pf_name);
}
void down_write(struct rw_semaphore *s)
{
	LOCK_ENTRY();
	if (s->__pf_writer || s->__pf_readers)
		pf_lock_warn("down_write while the rwsem is held (deadlock)", s->__pf_name);
	s->__pf_writer = 1;
	pf_acquire(s, s->__pf_name);
}
void up_write(struct rw_semaphore *s)
{
	LOCK_ENTRY();
	if (!s->__pf_writer)
		pf_lock_warn("up_write of an rwsem not held for write", s->__pf_name);
	s->__pf_writer = 0;
	pf_release(s, s->__pf_name);
}
int down_read_killable(struct rw_semaphore *s) { down_read(s); return 0; }
int down_write_killable(struct rw_semaphore *s) { down_write(s); return 0; }

/* ------------------------------------------------------------------ pages and folios */
void *__pf_page_folio(const struct page *page)
{
	long head = pf_ops.page_op(PF_PAGE_FOLIO, page_to_pfn(page), 0);
	PF_CHECK();
	return head < 0 ? (void *)page : (void *)pfn_to_page(head);
}
#define PAGE_OP(op, f, arg) ({ long __r = pf_ops.page_op(op, folio_pfn(f), arg); PF_CHECK(); __r; })
long folio_nr_pages(const struct folio *f) { return PAGE_OP(PF_FOLIO_NR_PAGES, f, 0); }
pgoff_t folio_index(const struct folio *f) { return PAGE_OP(PF_FOLIO_INDEX, f, 0); }
int folio_ref_count(const struct folio *f) { return PAGE_OP(PF_FOLIO_REFCOUNT, f, 0); }
bool folio_maybe_dma_pinned(const struct folio *f) { return PAGE_OP(PF_FOLIO_MAYBE_PINNED, f, 0); }
bool folio_test_hugetlb(const struct folio *f) { return PAGE_OP(PF_FOLIO_HUGETLB, f, 0); }
bool folio_is_longterm_pinnable(const struct folio *f) { return PAGE_OP(PF_FOLIO_LONGTERM_PINNABLE, f, 0); }
void folio_get(struct folio *f) { PAGE_OP(PF_FOLIO_GET, f, 0); }
void folio_put(struct folio *f) { PAGE_OP(PF_FOLIO_PUT, f, 0); }
void folio_mark_dirty(struct folio *f) { PAGE_OP(PF_FOLIO_DIRTY, f, 0); }
void set_page_dirty_lock(struct page *p) { folio_mark_dirty(page_folio(p)); }

struct page *alloc_pages(gfp_t gfp, unsigned int order)
{
	pf_capture();
	long pfn = pf_ops.page_op(PF_ALLOC_PAGES, order, gfp);
	PF_CHECK();
	return pfn < 0 ? NULL : pfn_to_page(pfn);
}
struct folio *folio_alloc(gfp_t gfp, unsigned int order) { return (struct folio *)alloc_pages(gfp | __GFP_COMP, order); }
void __free_pages(struct page *page, unsigned int order)
{
	pf_ops.page_op(PF_FREE_PAGES, page_to_pfn(page), order);
	PF_CHECK();
}

/* ------------------------------------------------------------------ GUP */
static long pf_gup(int op, struct mm_struct *mm, unsigned long start, unsigned long nr,
		   unsigned int flags, struct page **pages)
{
	pf_capture();
	long r = pf_ops.gup(op, mm, start, nr, flags, (void **)pages);
	PF_CHECK();
	return r;
}
int pin_user_pages_fast(unsigned long start, int nr_pages, unsigned int gup_flags, struct page **pages)
{ return pf_gup(PF_GUP_PIN_FAST, NULL, start, nr_pages, gup_flags, pages); }
long pin_user_pages(unsigned long start, unsigned long nr_pages, unsigned int gup_flags, struct page **pages)
{ return pf_gup(PF_GUP_PIN, NULL, start, nr_pages, gup_flags, pages); }
long pin_user_pages_unlocked(unsigned long start, unsigned long nr_pages, struct page **pages, unsigned int gup_flags)
{ return pf_gup(PF_GUP_PIN_UNLOCKED, NULL, start, nr_pages, gup_flags, pages); }
long pin_user_pages_remote(struct mm_struct *mm, unsigned long start, unsigned long nr_pages,
			   unsigned int gup_flags, struct page **pages, int *locked)
{ (void)locked; return pf_gup(PF_GUP_PIN_REMOTE, mm, start, nr_pages, gup_flags, pages); }
int get_user_pages_fast(unsigned long start, int nr_pages, unsigned int gup_flags, struct page **pages)
{ return pf_gup(PF_GUP_GET_FAST, NULL, start, nr_pages, gup_flags, pages); }
long get_user_pages(unsigned long start, unsigned long nr_pages, unsigned int gup_flags, struct page **pages)
{ return pf_gup(PF_GUP_GET, NULL, start, nr_pages, gup_flags, pages); }
long get_user_pages_unlocked(unsigned long start, unsigned long nr_pages, struct page **pages, unsigned int gup_flags)
{ return pf_gup(PF_GUP_GET_UNLOCKED, NULL, start, nr_pages, gup_flags, pages); }
long get_user_pages_remote(struct mm_struct *mm, unsigned long start, unsigned long nr_pages,
			   unsigned int gup_flags, struct page **pages, int *locked)
{ (void)locked; return pf_gup(PF_GUP_GET_REMOTE, mm, start, nr_pages, gup_flags, pages); }

static void pf_unpin(int op, void **h, unsigned long n, int dirty)
{
	pf_ops.unpin(op, h, n, dirty);
	PF_CHECK();
}
void unpin_user_page(struct page *page) { pf_unpin(PF_UNPIN_PAGES, (void **)&page, 1, 0); }
void unpin_user_pages(struct page **pages, unsigned long npages) { pf_unpin(PF_UNPIN_PAGES, (void **)pages, npages, 0); }
void unpin_user_pages_dirty_lock(struct page **pages, unsigned long npages, bool make_dirty)
{ pf_unpin(PF_UNPIN_PAGES_DIRTY, (void **)pages, npages, make_dirty); }
void unpin_user_page_range_dirty_lock(struct page *page, unsigned long npages, bool make_dirty)
{ pf_unpin(PF_UNPIN_PAGE_RANGE_DIRTY, (void **)&page, npages, make_dirty); }
void unpin_folio(struct folio *folio) { pf_unpin(PF_UNPIN_FOLIOS, (void **)&folio, 1, 0); }
void unpin_folios(struct folio **folios, unsigned long nfolios) { pf_unpin(PF_UNPIN_FOLIOS, (void **)folios, nfolios, 0); }
void unpin_user_folio(struct folio *folio, unsigned long npages) { pf_unpin(PF_UNPIN_USER_FOLIO, (void **)&folio, npages, 0); }

long memfd_pin_folios(struct file *memfd, loff_t start, loff_t end, struct folio **folios,
		      unsigned int max_folios, pgoff_t *offset)
{
	pf_capture();
	long r = pf_ops.memfd_pin(memfd, start, end, (void **)folios, max_folios, offset);
	PF_CHECK();
	return r;
}

/* ------------------------------------------------------------------ user memory */
unsigned long copy_from_user(void *to, const void __user *from, unsigned long n)
{
	unsigned long r = pf_ops.ucopy(PF_FROM_USER, to, (unsigned long)from, n);
	PF_CHECK();
	if (r)
		memset((char *)to + (n - r), 0, r);   /* the kernel zeroes the uncopied tail */
	return r;
}
unsigned long copy_to_user(void __user *to, const void *from, unsigned long n)
{
	unsigned long r = pf_ops.ucopy(PF_TO_USER, (void *)from, (unsigned long)to, n);
	PF_CHECK();
	return r;
}
unsigned long clear_user(void __user *to, unsigned long n)
{
	unsigned long r = pf_ops.ucopy(PF_CLEAR_USER, NULL, (unsigned long)to, n);
	PF_CHECK();
	return r;
}
bool access_ok(const void __user *addr, unsigned long size)
{
	unsigned long r = pf_ops.ucopy(PF_ACCESS_OK, NULL, (unsigned long)addr, size);
	PF_CHECK();
	return r == 0;
}
void *memdup_user(const void __user *src, size_t len)
{
	void *p = pf_slab(1, len, GFP_USER | __GFP_NOWARN, PF_SLAB_KMALLOC, 0, CALLER());

	if (!p)
		return ERR_PTR(-ENOMEM);
	if (p != ZERO_SIZE_PTR && copy_from_user(p, src, len)) {
		pf_free(p, CALLER());
		return ERR_PTR(-EFAULT);
	}
	return p;
}
void *vmemdup_user(const void __user *src, size_t len)
{
	void *p = pf_slab(1, len, GFP_USER, PF_SLAB_KVMALLOC, 0, CALLER());

	if (!p)
		return ERR_PTR(-ENOMEM);
	if (p != ZERO_SIZE_PTR && copy_from_user(p, src, len)) {
		pf_free(p, CALLER());
		return ERR_PTR(-EFAULT);
	}
	return p;
}

/* ------------------------------------------------------------------ tasks, mm, accounting */
static struct task_struct pf_current_task;
struct task_struct *__pf_get_current(void) { return &pf_current_task; }
void pf_set_current(int pid, const char *comm, void *mm)
{
	pf_current_task.pid = pid;
	pf_current_task.tgid = pid;
	strscpy(pf_current_task.comm, comm, TASK_COMM_LEN);
	pf_current_task.mm = mm;
}
#define MM_OP(op, mm, arg) ({ long __r = pf_ops.mm_op(op, mm, arg); PF_CHECK(); __r; })
void mmgrab(struct mm_struct *mm) { MM_OP(PF_MM_GRAB, mm, 0); }
void mmdrop(struct mm_struct *mm) { MM_OP(PF_MM_DROP, mm, 0); }
void mmget(struct mm_struct *mm) { MM_OP(PF_MM_GET, mm, 0); }
void mmput(struct mm_struct *mm) { MM_OP(PF_MM_PUT, mm, 0); }
void mmap_read_lock(struct mm_struct *mm) { (void)mm; }
void mmap_read_unlock(struct mm_struct *mm) { (void)mm; }
/* down_read_killable: -EINTR when a fatal signal is pending (kernel/locking/rwsem.c) */
int mmap_read_lock_killable(struct mm_struct *mm)
{ (void)mm; return fatal_signal_pending(current) ? -EINTR : 0; }
int account_locked_vm(struct mm_struct *mm, unsigned long pages, bool inc)
{ return MM_OP(inc ? PF_MM_ACCOUNT_INC : PF_MM_ACCOUNT_DEC, mm, pages); }
unsigned long __pf_mm_locked_vm(struct mm_struct *mm) { return MM_OP(PF_MM_LOCKED_VM, mm, 0); }
s64 __pf_mm_pinned_vm_add(struct mm_struct *mm, s64 delta) { return MM_OP(PF_MM_PINNED_VM_ADD, mm, delta); }
unsigned long rlimit(unsigned int limit) { return MM_OP(PF_RLIMIT, NULL, limit); }
bool capable(int cap) { return MM_OP(PF_CAPABLE, NULL, cap); }
bool can_do_mlock(void) { return rlimit(RLIMIT_MEMLOCK) != 0 || capable(CAP_IPC_LOCK); }
/* signal_pending()/fatal_signal_pending() of the model's current task; the bridge
 * has no other task_struct, so any other pointer is a recorded warning (and 0). */
int __pf_signal_pending(struct task_struct *p, int fatal)
{
	if (p != &pf_current_task) {
		pf_ops.warn("signal_pending", 0, "p != current",
			    "signal_pending of a task_struct that is not current", CALLER());
		PF_CHECK();
		return 0;
	}
	return MM_OP(PF_SIGNAL_PENDING, NULL, fatal);
}
unsigned int memalloc_pin_save(void) { return MM_OP(PF_PIN_SAVE, NULL, 0); }
void memalloc_pin_restore(unsigned int flags) { MM_OP(PF_PIN_RESTORE, NULL, flags); }

/* ------------------------------------------------------------------ files */
struct pf_file_block {
	struct file file;
	struct inode inode;
};

/* called from Python: a struct file (with its inode) standing for a model file */
struct file *pf_file_alloc(void *handle, const struct file_operations *fop, void *priv,
			   unsigned int flags, long long size)
{
	struct pf_file_block *b = pf_raw_alloc(sizeof(*b), 1);

	if (!b)
		return NULL;
	b->inode.i_data.host = &b->inode;
	b->inode.i_data.__pf_handle = handle;
	b->inode.i_mapping = &b->inode.i_data;
	b->inode.i_size = size;
	b->inode.i_rwsem.__pf_name = "inode->i_rwsem";
	b->file.f_op = fop;
	b->file.private_data = priv;
	b->file.f_inode = &b->inode;
	b->file.f_mapping = b->inode.i_mapping;
	b->file.f_flags = flags;
	b->file.f_mode = FMODE_READ | FMODE_WRITE;
	b->file.f_count.counter = 1;
	b->file.__pf_handle = handle;
	return &b->file;
}
void pf_file_free(struct file *f) { pf_raw_free(container_of(f, struct pf_file_block, file)); }
struct inode *pf_file_inode(struct file *f) { return f->f_inode; }

#define FILE_OP(op, f, a, b) ({ long __r = pf_ops.file_op(op, f, a, b); PF_CHECK(); __r; })
struct file *fget(unsigned int fd) { return (struct file *)FILE_OP(PF_FGET, NULL, fd, 0); }
void fput(struct file *file) { FILE_OP(PF_FPUT, file, 0, 0); }
struct file *get_file(struct file *f) { FILE_OP(PF_GET_FILE, f, 0, 0); return f; }
int get_unused_fd_flags(unsigned int flags) { return FILE_OP(PF_FD_ALLOC, NULL, flags, 0); }
void put_unused_fd(unsigned int fd) { FILE_OP(PF_FD_PUT_UNUSED, NULL, fd, 0); }
void fd_install(unsigned int fd, struct file *file) { FILE_OP(PF_FD_INSTALL, file, fd, 0); }
loff_t i_size_read(const struct inode *inode) { return FILE_OP(PF_I_SIZE, inode->i_data.__pf_handle, 0, 0); }
long memfd_fcntl(struct file *file, unsigned int cmd, unsigned int arg) { return FILE_OP(PF_MEMFD_FCNTL, file, cmd, arg); }
bool shmem_file(struct file *file) { return file && FILE_OP(PF_SHMEM_FILE, file, 0, 0); }
bool is_file_hugepages(struct file *file) { return file && FILE_OP(PF_HUGEPAGES_FILE, file, 0, 0); }
bool shmem_mapping(struct address_space *mapping)
{ return mapping && FILE_OP(PF_SHMEM_MAPPING, mapping->__pf_handle, 0, 0); }

static struct hstate pf_hstates[32];
struct hstate *hstate_file(struct file *f)
{
	long order = FILE_OP(PF_HSTATE_ORDER, f, 0, 0);

	if (order < 0 || order >= 32)
		return NULL;
	pf_hstates[order].order = order;
	return &pf_hstates[order];
}
struct page *shmem_read_mapping_page(struct address_space *mapping, pgoff_t index)
{
	pf_capture();
	long r = FILE_OP(PF_READ_MAPPING_PAGE, mapping->__pf_handle, index, 0);
	return r < 0 ? ERR_PTR(r) : pfn_to_page(r);
}
struct folio *shmem_read_folio(struct address_space *mapping, pgoff_t index)
{
	struct page *p = shmem_read_mapping_page(mapping, index);
	return IS_ERR(p) ? (struct folio *)p : page_folio(p);
}
struct page *find_get_page_flags(struct address_space *mapping, pgoff_t index, int fgp)
{
	long r = FILE_OP(PF_FIND_GET_PAGE, mapping->__pf_handle, index, fgp);
	return r < 0 ? NULL : pfn_to_page(r);
}
struct folio *filemap_get_folio(struct address_space *mapping, pgoff_t index)
{
	long r = FILE_OP(PF_FILEMAP_GET_FOLIO, mapping->__pf_handle, index, 0);
	return r < 0 ? ERR_PTR(r) : (struct folio *)pfn_to_page(r);
}
loff_t noop_llseek(struct file *file, loff_t offset, int whence) { (void)whence; (void)offset; return file->f_pos; }
int nonseekable_open(struct inode *inode, struct file *filp) { (void)inode; (void)filp; return 0; }

/* ------------------------------------------------------------------ CPU views of pages */
struct pf_kmap {
	struct pf_kmap *next;
	unsigned long n;
	unsigned long *pfns;
	char *buf;
};
static struct pf_kmap *pf_kmaps;

static void *pf_map_pfns(unsigned long *pfns, unsigned long n)
{
	struct pf_kmap *m = pf_raw_alloc(sizeof(*m), 1);

	if (!m)
		return NULL;
	m->n = n;
	m->pfns = pfns;
	m->buf = pf_raw_alloc(n * PAGE_SIZE, 0);
	if (!m->buf) {
		pf_raw_free(m);
		return NULL;
	}
	pf_ops.pagemap(PF_KMAP_FILL, pfns, n, m->buf);
	PF_CHECK();
	m->next = pf_kmaps;
	pf_kmaps = m;
	return m->buf;
}

static void pf_unmap(const void *addr)
{
	struct pf_kmap **pp, *m;
	const char *a = addr;

	for (pp = &pf_kmaps; (m = *pp); pp = &m->next)
		if (a >= m->buf && a < m->buf + m->n * PAGE_SIZE) {
			*pp = m->next;
			pf_ops.pagemap(PF_KMAP_FLUSH, m->pfns, m->n, m->buf);
			pf_raw_free(m->buf);
			pf_raw_free(m->pfns);
			pf_raw_free(m);
			PF_CHECK();
			return;
		}
	__pf_warn("vunmap", 0, "unmapping an address that is not mapped", NULL);
}

void *vm_map_ram(struct page **pages, unsigned int count, int node)
{
	unsigned long *pfns = pf_raw_alloc(count * sizeof(long) + 1, 0);
	unsigned int i;

	(void)node;
	if (!pfns)
		return NULL;
	for (i = 0; i < count; i++)
		pfns[i] = page_to_pfn(pages[i]);
	return pf_map_pfns(pfns, count);
}
void vm_unmap_ram(const void *mem, unsigned int count) { (void)count; pf_unmap(mem); }
void *vmap(struct page **pages, unsigned int count, unsigned long flags, pgprot_t prot)
{ (void)flags; (void)prot; return vm_map_ram(pages, count, -1); }
void vunmap(const void *addr) { pf_unmap(addr); }
void *kmap_local_page(struct page *page) { return vm_map_ram(&page, 1, -1); }
void *kmap_local_folio(struct folio *folio, size_t offset)
{
	struct page *p = folio_page(folio, offset >> PAGE_SHIFT);
	char *base = kmap_local_page(p);
	return base ? base + offset_in_page(offset) : NULL;
}
void kunmap_local(const void *addr) { pf_unmap(addr); }
/* Python: flush every live CPU view back into its folios (before the test reads them) */
void pf_kmap_flush_all(void)
{
	struct pf_kmap *m;

	for (m = pf_kmaps; m; m = m->next)
		pf_ops.pagemap(PF_KMAP_FLUSH, m->pfns, m->n, m->buf);
}

static unsigned long pf_inserted_pfn = ~0UL;
unsigned long pf_last_inserted_pfn(void) { unsigned long p = pf_inserted_pfn; pf_inserted_pfn = ~0UL; return p; }
vm_fault_t vmf_insert_pfn(struct vm_area_struct *vma, unsigned long addr, unsigned long pfn)
{ (void)vma; (void)addr; pf_inserted_pfn = pfn; return VM_FAULT_NOPAGE; }
int vm_insert_page(struct vm_area_struct *vma, unsigned long addr, struct page *page)
{ (void)vma; (void)addr; (void)page; return 0; }

/* ------------------------------------------------------------------ devices */
#define DEV_OP(op, obj, a, b) ({ long __r = pf_ops.dev_op(op, obj, a, b); PF_CHECK(); __r; })
int misc_register(struct miscdevice *misc)
{
	struct device *dev;
	long r;

	dev = pf_slab(1, sizeof(*dev), GFP_KERNEL, PF_SLAB_KERNEL, 1, CALLER());
	if (!dev)
		return -ENOMEM;
	dev->init_name = misc->name;
	dev->dma_mask = &dev->__pf_dma_mask;
	dev->__pf_dma_mask = DMA_BIT_MASK(32);
	dev->coherent_dma_mask = DMA_BIT_MASK(32);
	r = DEV_OP(PF_MISC_REGISTER, misc, (long)misc->name, (long)misc->fops);
	if (r < 0) {
		pf_free(dev, CALLER());
		return r;
	}
	misc->this_device = dev;
	return 0;
}
void misc_deregister(struct miscdevice *misc)
{
	DEV_OP(PF_MISC_DEREGISTER, misc, 0, 0);
	pf_free(misc->this_device, CALLER());
	misc->this_device = NULL;
}
/* character devices: the bridge keeps the registry (major numbers from 240 up, as the
 * kernel's dynamic range starts at CHRDEV_MAJOR_DYN_END...) and finds them by name */
int register_chrdev(unsigned int major, const char *name, const struct file_operations *fops)
{
	return DEV_OP(PF_CHRDEV_REGISTER, (void *)fops, (long)name, major);
}
void unregister_chrdev(unsigned int major, const char *name)
{
	DEV_OP(PF_CHRDEV_UNREGISTER, NULL, (long)name, MKDEV(major, 0));
}
int alloc_chrdev_region(dev_t *dev, unsigned int baseminor, unsigned int count, const char *name)
{
	long major = DEV_OP(PF_CHRDEV_REGISTER, NULL, (long)name, 0);

	if (major < 0)
		return major;
	*dev = MKDEV((unsigned int)major, baseminor);
	return 0;
}
int register_chrdev_region(dev_t from, unsigned int count, const char *name)
{
	long major = DEV_OP(PF_CHRDEV_REGISTER, NULL, (long)name, MAJOR(from));

	(void)count;
	return major < 0 ? major : 0;
}
void unregister_chrdev_region(dev_t from, unsigned int count)
{
	(void)count;
	DEV_OP(PF_CHRDEV_UNREGISTER, NULL, 0, from);
}
void cdev_init(struct cdev *cdev, const struct file_operations *fops)
{
	memset(cdev, 0, sizeof(*cdev));
	INIT_LIST_HEAD(&cdev->list);
	cdev->ops = fops;
}
int cdev_add(struct cdev *p, dev_t dev, unsigned int count)
{
	p->dev = dev;
	p->count = count;
	return DEV_OP(PF_CDEV_ADD, p, dev, count);
}
void cdev_del(struct cdev *p) { DEV_OP(PF_CDEV_DEL, p, p->dev, 0); }
struct class *class_create(const char *name)
{
	struct class *cls = pf_slab(1, sizeof(*cls), GFP_KERNEL, PF_SLAB_KERNEL, 1, CALLER());

	if (!cls)
		return ERR_PTR(-ENOMEM);
	cls->name = name;
	return cls;
}
void class_destroy(struct class *cls)
{
	if (!IS_ERR_OR_NULL(cls))
		pf_free(cls, CALLER());
}
struct device *device_create(struct class *cls, struct device *parent, dev_t devt, void *drvdata,
			     const char *fmt, ...)
{
	struct pf_named_dev { struct device dev; char name[64]; } *d;
	va_list ap;
	long r;

	(void)cls; (void)parent;
	d = pf_slab(1, sizeof(*d), GFP_KERNEL, PF_SLAB_KERNEL, 1, CALLER());
	if (!d)
		return ERR_PTR(-ENOMEM);
	va_start(ap, fmt);
	pf_vsnprintf(d->name, sizeof(d->name), fmt, ap);
	va_end(ap);
	d->dev.init_name = d->name;
	d->dev.driver_data = drvdata;
	d->dev.__pf_dma_mask = DMA_BIT_MASK(32);
	d->dev.dma_mask = &d->dev.__pf_dma_mask;
	r = DEV_OP(PF_DEVICE_CREATE, &d->dev, (long)d->name, devt);
	if (r < 0) {
		pf_free(d, CALLER());
		return ERR_PTR(r);
	}
	return &d->dev;
}
void device_destroy(struct class *cls, dev_t devt)
{
	long r = DEV_OP(PF_DEVICE_DESTROY, NULL, devt, 0);

	(void)cls;
	if (r > 0)
		pf_free((void *)r, CALLER());
}
/* Python: open of a character device: the inode's i_rdev/i_cdev, the cdev's fops */
void pf_inode_set_cdev(struct inode *inode, struct cdev *cdev, dev_t devt)
{
	inode->i_cdev = cdev;
	inode->i_rdev = devt;
}
void *pf_cdev_ops(struct cdev *cdev) { return (void *)cdev->ops; }

int dma_set_mask_and_coherent(struct device *dev, u64 mask)
{
	if (mask < DMA_BIT_MASK(24))
		return -EIO;
	*dev->dma_mask = mask;
	dev->coherent_dma_mask = mask;
	return 0;
}
int dma_coerce_mask_and_coherent(struct device *dev, u64 mask)
{
	dev->dma_mask = &dev->coherent_dma_mask;
	return dma_set_mask_and_coherent(dev, mask);
}

/* ------------------------------------------------------------------ scatterlist */
void sg_init_table(struct scatterlist *sgl, unsigned int nents)
{
	memset(sgl, 0, sizeof(*sgl) * nents);
	sg_mark_end(&sgl[nents - 1]);
}

/*
 * The kernel's chunked tables (lib/scatterlist.c): a chunk of SG_MAX_SINGLE_ALLOC
 * entries is a page from the page allocator (__get_free_page: the alloc_pages fault
 * site), a smaller one comes from kmalloc_array (the kmalloc site); when a table needs
 * more than one chunk, the last entry of a full chunk chains to the next.  So a fault
 * matrix fails a table build at the chunk the kernel would fail at.
 */
#define SG_MAX_SINGLE_ALLOC (PAGE_SIZE / sizeof(struct scatterlist))

struct pf_sgpage {
	struct pf_sgpage *next;
	void *buf;
	unsigned long pfn;
};
static struct pf_sgpage *pf_sgpages;

static struct scatterlist *sg_kmalloc(unsigned int nents, gfp_t gfp, void *caller)
{
	if (nents == SG_MAX_SINGLE_ALLOC) {
		struct pf_sgpage *pg;
		long pfn;

		pfn = pf_ops.page_op(PF_ALLOC_PAGES, 0, gfp);
		PF_CHECK();
		if (pfn < 0)
			return NULL;
		/* the page's contents are C memory the runtime keeps for it */
		pg = pf_raw_alloc(sizeof(*pg), 1);
		if (pg)
			pg->buf = pf_raw_alloc(PAGE_SIZE, 0);
		if (!pg || !pg->buf) {
			pf_raw_free(pg);
			__free_pages(pfn_to_page(pfn), 0);
			return NULL;
		}
		pg->pfn = pfn;
		pg->next = pf_sgpages;
		pf_sgpages = pg;
		return pg->buf;
	}
	return pf_slab(nents, sizeof(struct scatterlist), gfp, PF_SLAB_KMALLOC, 0, caller);
}

static void sg_kfree(struct scatterlist *sg, unsigned int nents, void *caller)
{
	if (nents == SG_MAX_SINGLE_ALLOC) {
		struct pf_sgpage **pp, *pg;

		for (pp = &pf_sgpages; (pg = *pp); pp = &pg->next)
			if (pg->buf == (void *)sg) {
				*pp = pg->next;
				__free_pages(pfn_to_page(pg->pfn), 0);
				pf_raw_free(pg->buf);
				pf_raw_free(pg);
				return;
			}
		__pf_warn("sg_free_table", 0, "freeing a scatterlist page chunk the runtime did not allocate", NULL);
		return;
	}
	pf_free(sg, caller);
}

static void sg_chain(struct scatterlist *prv, unsigned int prv_nents, struct scatterlist *sgl)
{
	prv[prv_nents - 1].offset = 0;
	prv[prv_nents - 1].length = 0;
	prv[prv_nents - 1].page_link = ((unsigned long)sgl | SG_CHAIN) & ~SG_END;
}

static void pf_sg_free(struct sg_table *table, unsigned int num_ents, void *caller)
{
	struct scatterlist *sgl = table->sgl, *next;
	unsigned int max_ents = SG_MAX_SINGLE_ALLOC;

	if (!sgl)
		return;
	while (num_ents) {
		unsigned int alloc_size = num_ents, sg_size;

		if (alloc_size > max_ents) {
			next = sg_chain_ptr(&sgl[max_ents - 1]);
			alloc_size = max_ents;
			sg_size = alloc_size - 1;
		} else {
			sg_size = alloc_size;
			next = NULL;
		}
		num_ents -= sg_size;
		sg_kfree(sgl, alloc_size, caller);
		sgl = next;
	}
	table->sgl = NULL;
}

static int pf_sg_alloc(struct sg_table *table, unsigned int nents, gfp_t gfp, void *caller)
{
	struct scatterlist *sg, *prv = NULL;
	unsigned int left = nents, max_ents = SG_MAX_SINGLE_ALLOC;
	int ret;

	memset(table, 0, sizeof(*table));
	if (nents == 0)
		return -EINVAL;
	do {
		unsigned int sg_size, alloc_size = left;

		if (alloc_size > max_ents) {
			alloc_size = max_ents;
			sg_size = alloc_size - 1;
		} else {
			sg_size = alloc_size;
		}
		left -= sg_size;
		sg = sg_kmalloc(alloc_size, gfp, caller);
		if (!sg) {
			/* the previous chunk's last entry will not be used for linkage */
			if (prv)
				table->nents = ++table->orig_nents;
			ret = -ENOMEM;
			goto fail;
		}
		sg_init_table(sg, alloc_size);
		table->nents = table->orig_nents += sg_size;
		if (prv)
			sg_chain(prv, max_ents, sg);
		else
			table->sgl = sg;
		if (!left)
			sg_mark_end(&sg[sg_size - 1]);
		prv = sg;
	} while (left);
	return 0;
fail:
	pf_sg_free(table, table->orig_nents, caller);
	return ret;
}

/* Python: page chunks of scatterlists still allocated (reported as leaks at unload) */
int pf_sgpages_live(void)
{
	struct pf_sgpage *pg;
	int n = 0;

	for (pg = pf_sgpages; pg; pg = pg->next)
		n++;
	return n;
}

int sg_alloc_table(struct sg_table *table, unsigned int nents, gfp_t gfp)
{
	pf_capture();
	return pf_sg_alloc(table, nents, gfp, CALLER());
}

void sg_free_table(struct sg_table *table)
{
	pf_sg_free(table, table->orig_nents, CALLER());
	table->nents = table->orig_nents = 0;
}

int sg_alloc_table_from_pages_segment(struct sg_table *sgt, struct page **pages, unsigned int n_pages,
				      unsigned int offset, unsigned long size, unsigned int max_segment,
				      gfp_t gfp)
{
	unsigned int i, chunks = 0, cur;
	struct scatterlist *s;
	int ret;

	if (!n_pages)
		return -EINVAL;
	/* merge physically contiguous pages up to max_segment, as lib/scatterlist.c does */
	for (i = 0; i < n_pages; i = cur) {
		unsigned long seg = 0;
		for (cur = i + 1; cur < n_pages; cur++) {
			seg += PAGE_SIZE;
			if (page_to_pfn(pages[cur]) != page_to_pfn(pages[cur - 1]) + 1 || seg + PAGE_SIZE > max_segment)
				break;
		}
		chunks++;
	}
	pf_capture();
	ret = pf_sg_alloc(sgt, chunks, gfp, CALLER());
	if (ret)
		return ret;
	s = sgt->sgl;
	for (i = 0; i < n_pages; i = cur) {
		unsigned long seg = 0, len;
		for (cur = i + 1; cur < n_pages; cur++) {
			seg += PAGE_SIZE;
			if (page_to_pfn(pages[cur]) != page_to_pfn(pages[cur - 1]) + 1 || seg + PAGE_SIZE > max_segment)
				break;
		}
		len = ((unsigned long)(cur - i) << PAGE_SHIFT) - offset;
		if (len > size)
			len = size;
		sg_set_page(s, pages[i], len, offset);
		size -= len;
		offset = 0;
		s = sg_next(s);
	}
	return 0;
}

/* DMA mapping: the model's (kernel/dma/mapping.c): the dma_map_sg and dma_map_page fault
 * sites, the device's mask, and every mapping judged by the checker (never unmapped:
 * rule 4; a page migrated or freed while mapped: rule 6).  The bridge writes each
 * entry's dma_address/dma_length. */
int dma_map_sgtable(struct device *dev, struct sg_table *sgt, enum dma_data_direction dir, unsigned long attrs)
{
	long r;

	pf_capture();
	(void)attrs;
	r = DEV_OP(PF_DMA_MAP, dev, (long)sgt, dir);
	if (r < 0)
		return r;
	sgt->nents = r;
	return 0;
}
void dma_unmap_sgtable(struct device *dev, struct sg_table *sgt, enum dma_data_direction dir, unsigned long attrs)
{
	(void)attrs;
	DEV_OP(PF_DMA_UNMAP, dev, (long)sgt, dir);
}
/* Python: set entry i's DMA address and length */
void pf_sg_set_dma(struct sg_table *sgt, unsigned int idx, unsigned long addr, unsigned int len)
{
	struct scatterlist *s;
	unsigned int i;

	for_each_sg(sgt->sgl, s, sgt->orig_nents, i)
		if (i == idx) {
			s->dma_address = addr;
			s->dma_length = len;
			return;
		}
}
u64 pf_dev_dma_mask(struct device *dev) { return dev->dma_mask ? *dev->dma_mask : DMA_BIT_MASK(32); }
const char *pf_dev_name(struct device *dev) { return dev_name(dev); }
void dma_sync_sgtable_for_cpu(struct device *dev, struct sg_table *sgt, enum dma_data_direction dir)
{ (void)dev; (void)sgt; (void)dir; }
void dma_sync_sgtable_for_device(struct device *dev, struct sg_table *sgt, enum dma_data_direction dir)
{ (void)dev; (void)sgt; (void)dir; }
dma_addr_t dma_map_page(struct device *dev, struct page *page, size_t offset, size_t size,
			enum dma_data_direction dir)
{
	unsigned long args[3] = { page_to_pfn(page), offset, size };

	pf_capture();
	return (dma_addr_t)DEV_OP(PF_DMA_MAP_PAGE, dev, (long)args, dir);
}
void dma_unmap_page(struct device *dev, dma_addr_t addr, size_t size, enum dma_data_direction dir)
{
	unsigned long args[2] = { addr, size };

	DEV_OP(PF_DMA_UNMAP_PAGE, dev, (long)args, dir);
}
int dma_mapping_error(struct device *dev, dma_addr_t addr) { (void)dev; return addr == DMA_MAPPING_ERROR ? -ENOMEM : 0; }

/* ------------------------------------------------------------------ dma-buf (drivers/dma-buf/dma-buf.c) */
struct dma_buf *dma_buf_export(const struct dma_buf_export_info *exp_info)
{
	struct dma_buf *d;
	long r;

	pf_capture();

	if (!exp_info->ops || !exp_info->ops->map_dma_buf || !exp_info->ops->unmap_dma_buf ||
	    !exp_info->ops->release) {
		__pf_warn("dma_buf_export", 0, "WARN_ON(!exp_info->ops ...)", NULL);
		return ERR_PTR(-EINVAL);
	}
	d = pf_slab(1, sizeof(*d), GFP_KERNEL, PF_SLAB_KERNEL, 1, CALLER());
	if (!d)
		return ERR_PTR(-ENOMEM);
	d->ops = exp_info->ops;
	d->size = exp_info->size;
	d->exp_name = exp_info->exp_name;
	d->owner = exp_info->owner;
	d->priv = exp_info->priv;
	d->resv = exp_info->resv ? exp_info->resv : &d->__pf_resv;
	INIT_LIST_HEAD(&d->attachments);
	/* dma_buf_getfile: the file whose last fput releases the buffer */
	r = DEV_OP(PF_DMA_BUF_EXPORT, d, exp_info->flags, exp_info->size);
	if (r < 0) {
		pf_free(d, CALLER());
		return ERR_PTR(r);
	}
	d->file = (struct file *)r;
	return d;
}
int dma_buf_fd(struct dma_buf *dmabuf, int flags)
{
	if (!dmabuf || !dmabuf->file)
		return -EINVAL;
	return DEV_OP(PF_DMA_BUF_FD, dmabuf, flags, 0);
}
void get_dma_buf(struct dma_buf *dmabuf) { get_file(dmabuf->file); }
void dma_buf_put(struct dma_buf *dmabuf)
{
	if (WARN_ON(!dmabuf || !dmabuf->file))
		return;
	fput(dmabuf->file);
}
struct dma_buf *dma_buf_get(int fd)
{
	long r = DEV_OP(PF_DMA_BUF_GET_FD, NULL, fd, 0);
	return r < 0 ? ERR_PTR(r) : (struct dma_buf *)r;
}
long pinfault_fault_point(const char *site)
{
	pf_capture();
	return DEV_OP(PF_FAULT_POINT, NULL, (long)site, 0);
}

/* Python: live CPU views (vm_map_ram/vmap/kmap never unmapped), reported at unload */
int pf_kmaps_live(void)
{
	struct pf_kmap *m;
	int n = 0;

	for (m = pf_kmaps; m; m = m->next)
		n++;
	return n;
}

/* Python: the dma-buf's file was released: free the struct (after ops->release ran) */
void pf_dma_buf_free(struct dma_buf *d) { pf_free(d, CALLER()); }
void *pf_dma_buf_priv_ops(struct dma_buf *d) { return (void *)d->ops; }

/* ------------------------------------------------------------------ for the loader */
/* The function pointers a test reaches: file_operations and dma_buf_ops slots. */
void *pf_fop(const struct file_operations *f, int which)
{
	if (!f)
		return NULL;
	switch (which) {
	case 0: return (void *)f->open;
	case 1: return (void *)f->release;
	case 2: return (void *)f->unlocked_ioctl;
	case 3: return (void *)f->mmap;
	case 4: return (void *)f->read;
	case 5: return (void *)f->write;
	case 6: return (void *)f->compat_ioctl;
	}
	return NULL;
}
void *pf_dmabuf_op(struct dma_buf *d, int which)
{
	const struct dma_buf_ops *o = d->ops;

	switch (which) {
	case 0: return (void *)o->release;
	case 1: return (void *)o->map_dma_buf;
	case 2: return (void *)o->unmap_dma_buf;
	case 3: return (void *)o->begin_cpu_access;
	case 4: return (void *)o->end_cpu_access;
	case 5: return (void *)o->vmap;
	case 6: return (void *)o->vunmap;
	case 7: return (void *)o->mmap;
	case 8: return (void *)o->attach;
	case 9: return (void *)o->detach;
	}
	return NULL;
}
void *pf_dmabuf_priv(struct dma_buf *d) { return d->priv; }
unsigned long pf_dmabuf_size(struct dma_buf *d) { return d->size; }

/* a struct dma_buf_attachment for the test's importer, and its teardown */
struct dma_buf_attachment *pf_attachment_new(struct dma_buf *d, struct device *dev)
{
	struct dma_buf_attachment *a = pf_raw_alloc(sizeof(*a), 1);

	if (a) {
		a->dmabuf = d;
		a->dev = dev;
		list_add(&a->node, &d->attachments);
	}
	return a;
}
void pf_attachment_free(struct dma_buf_attachment *a) { list_del(&a->node); pf_raw_free(a); }
struct device *pf_device_new(const char *name)
{
	struct device *dev = pf_raw_alloc(sizeof(*dev), 1);

	if (dev) {
		dev->init_name = name;
		dev->__pf_dma_mask = DMA_BIT_MASK(64);
		dev->dma_mask = &dev->__pf_dma_mask;
		dev->coherent_dma_mask = DMA_BIT_MASK(64);
	}
	return dev;
}
/* walk an sg table: fills up to max (pfn, offset, length, dma_address) quadruples */
unsigned int pf_sg_entries(struct sg_table *sgt, unsigned long *out, unsigned int max, int dma)
{
	struct scatterlist *s;
	unsigned int i, n = 0;

	for_each_sg(sgt->sgl, s, dma ? sgt->nents : sgt->orig_nents, i) {
		if (n >= max)
			break;
		out[4 * n] = page_to_pfn(sg_page(s));
		out[4 * n + 1] = s->offset;
		out[4 * n + 2] = s->length;
		out[4 * n + 3] = s->dma_address;
		n++;
	}
	return n;
}
void *pf_vma_new(unsigned long start, unsigned long end, unsigned long flags, unsigned long pgoff)
{
	struct vm_area_struct *v = pf_raw_alloc(sizeof(*v), 1);

	if (v) {
		v->vm_start = start;
		v->vm_end = end;
		v->vm_flags = flags;
		v->vm_pgoff = pgoff;
	}
	return v;
}
/* a vm fault through vma->vm_ops->fault: returns the VM_FAULT code; *pfn / *page out */
void *pf_vma_fault_fn(struct vm_area_struct *v) { return v->vm_ops ? (void *)v->vm_ops->fault : NULL; }
struct vm_fault *pf_vmf_new(struct vm_area_struct *v, unsigned long pgoff, unsigned long addr)
{
	struct vm_fault *f = pf_raw_alloc(sizeof(*f), 1);

	if (f) {
		f->vma = v;
		f->pgoff = pgoff;
		f->address = addr;
	}
	return f;
}
void *pf_vmf_page(struct vm_fault *f) { return f->page; }
void *pf_iosys_vaddr(struct iosys_map *m) { return m->vaddr; }
