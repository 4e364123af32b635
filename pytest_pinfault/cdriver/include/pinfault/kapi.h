/*
 * pytest-pinfault C-driver bridge: the kernel API subset a pinning driver uses.
 *
 * Written for this project (no kernel text copied): names, types, signatures and
 * return conventions follow the kernel's (v6.12); macros and inlines that do real work
 * in the kernel (ERR_PTR, list_head, IS_ALIGNED, min/max, overflow checks, container_of,
 * BIT, ...) do the same work here.  Every function declared "extern" below is implemented
 * by the runtime (runtime/kruntime.c), which calls back into the fake mm.
 *
 * Every <linux/...> header of the bridge includes this one file.  A kernel API that is
 * neither declared nor defined here is reported by the loader as a missing kernel API
 * naming the symbol and the driver line that used it.
 */
#ifndef PINFAULT_KAPI_H
#define PINFAULT_KAPI_H

/* ------------------------------------------------------------------ compiler */
#define __user
#define __iomem
#define __force
#define __rcu
#define __percpu
#define __init
#define __exit
#define __initdata
#define __read_mostly
#define __always_inline inline __attribute__((__always_inline__))
#define noinline __attribute__((__noinline__))
#define __must_check __attribute__((__warn_unused_result__))
#define __maybe_unused __attribute__((__unused__))
#define __always_unused __attribute__((__unused__))
#define __packed __attribute__((__packed__))
#define __aligned(x) __attribute__((__aligned__(x)))
#define __printf(a, b) __attribute__((__format__(printf, a, b)))
#define __cold __attribute__((__cold__))
#define fallthrough __attribute__((__fallthrough__))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define barrier() __asm__ __volatile__("" ::: "memory")
#define READ_ONCE(x) (*(const volatile __typeof__(x) *)&(x))
#define WRITE_ONCE(x, val) do { *(volatile __typeof__(x) *)&(x) = (val); } while (0)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define __stringify_1(x) #x
#define __stringify(x) __stringify_1(x)
#define BUILD_BUG_ON(cond) _Static_assert(!(cond), "BUILD_BUG_ON(" #cond ")")
#define static_assert(expr, ...) _Static_assert(expr, #expr)
#define __same_type(a, b) __builtin_types_compatible_p(__typeof__(a), __typeof__(b))
#define typeof_member(T, m) __typeof__(((T *)0)->m)

/* ------------------------------------------------------------------ types */
#define NULL ((void *)0)
typedef _Bool bool;
#define true 1
#define false 0
typedef signed char s8;
typedef unsigned char u8;
typedef short s16;
typedef unsigned short u16;
typedef int s32;
typedef unsigned int u32;
typedef long long s64;
typedef unsigned long long u64;
typedef s8 __s8;
typedef u8 __u8;
typedef s16 __s16;
typedef u16 __u16;
typedef s32 __s32;
typedef u32 __u32;
typedef s64 __s64;
typedef u64 __u64;
typedef u16 __le16;
typedef u32 __le32;
typedef u64 __le64;
typedef u64 __aligned_u64 __attribute__((aligned(8)));
typedef __SIZE_TYPE__ size_t;
typedef long ssize_t;
typedef __PTRDIFF_TYPE__ ptrdiff_t;
typedef unsigned long uintptr_t;
typedef long intptr_t;
typedef long long loff_t;
typedef unsigned long pgoff_t;
typedef unsigned int gfp_t;
typedef unsigned int fmode_t;
typedef unsigned short umode_t;
typedef int pid_t;
typedef unsigned int uid_t;
typedef u64 dma_addr_t;
typedef u32 dev_t;
typedef u64 phys_addr_t;
typedef unsigned int vm_fault_t;
typedef unsigned long vm_flags_t;
typedef u8 u_int8_t;
typedef u32 u_int32_t;
typedef struct { int counter; } atomic_t;
typedef struct { s64 counter; } atomic64_t;
typedef atomic64_t atomic_long_t;
typedef struct { int refs; } refcount_t;
typedef struct { uid_t val; } kuid_t;
typedef __builtin_va_list va_list;
#define va_start(v, l) __builtin_va_start(v, l)
#define va_end(v) __builtin_va_end(v)
#define va_arg(v, T) __builtin_va_arg(v, T)

#define U8_MAX ((u8)~0U)
#define U16_MAX ((u16)~0U)
#define U32_MAX ((u32)~0U)
#define U64_MAX ((u64)~0ULL)
#define S32_MAX ((s32)(U32_MAX >> 1))
#define INT_MAX ((int)(~0U >> 1))
#define INT_MIN (-INT_MAX - 1)
#define UINT_MAX (~0U)
#define LONG_MAX ((long)(~0UL >> 1))
#define LONG_MIN (-LONG_MAX - 1)
#define ULONG_MAX (~0UL)
#define LLONG_MAX ((long long)(~0ULL >> 1))
#define SIZE_MAX (~(size_t)0)
#define BITS_PER_LONG 64

#define offsetof(T, m) __builtin_offsetof(T, m)
#define container_of(ptr, type, member) ({ \
	void *__mptr = (void *)(ptr); \
	((type *)(__mptr - offsetof(type, member))); })

/* ------------------------------------------------------------------ bits, alignment, math */
#define BIT(nr) (1UL << (nr))
#define BIT_ULL(nr) (1ULL << (nr))
#define GENMASK(h, l) (((~0UL) << (l)) & (~0UL >> (BITS_PER_LONG - 1 - (h))))
#define GENMASK_ULL(h, l) (((~0ULL) << (l)) & (~0ULL >> (63 - (h))))
#define __ALIGN_MASK(x, mask) (((x) + (mask)) & ~(mask))
#define ALIGN(x, a) __ALIGN_MASK(x, (__typeof__(x))(a) - 1)
#define ALIGN_DOWN(x, a) ((x) & ~((__typeof__(x))(a) - 1))
#define IS_ALIGNED(x, a) (((x) & ((__typeof__(x))(a) - 1)) == 0)
#define PTR_ALIGN(p, a) ((__typeof__(p))ALIGN((unsigned long)(p), (a)))
#define DIV_ROUND_UP(n, d) (((n) + (d) - 1) / (d))
#define round_up(x, y) ((((x) - 1) | ((__typeof__(x))((y) - 1))) + 1)
#define round_down(x, y) ((x) & ~((__typeof__(x))((y) - 1)))
#define is_power_of_2(n) ((n) != 0 && (((n) & ((n) - 1)) == 0))
#define min(x, y) ({ __typeof__(x) _mx = (x); __typeof__(y) _my = (y); \
	(void)(&_mx == &_my); _mx < _my ? _mx : _my; })
#define max(x, y) ({ __typeof__(x) _mx = (x); __typeof__(y) _my = (y); \
	(void)(&_mx == &_my); _mx > _my ? _mx : _my; })
#define min_t(T, x, y) ({ T _mx = (x); T _my = (y); _mx < _my ? _mx : _my; })
#define max_t(T, x, y) ({ T _mx = (x); T _my = (y); _mx > _my ? _mx : _my; })
#define min3(x, y, z) min((__typeof__(x))min(x, y), z)
#define clamp(v, lo, hi) min((__typeof__(v))max(v, lo), hi)
#define clamp_t(T, v, lo, hi) min_t(T, max_t(T, v, lo), hi)
#define swap(a, b) do { __typeof__(a) _sw = (a); (a) = (b); (b) = _sw; } while (0)
#define check_add_overflow(a, b, d) __builtin_add_overflow(a, b, d)
#define check_sub_overflow(a, b, d) __builtin_sub_overflow(a, b, d)
#define check_mul_overflow(a, b, d) __builtin_mul_overflow(a, b, d)
static inline size_t size_mul(size_t a, size_t b)
{ size_t r; return __builtin_mul_overflow(a, b, &r) ? SIZE_MAX : r; }
static inline size_t size_add(size_t a, size_t b)
{ size_t r; return __builtin_add_overflow(a, b, &r) ? SIZE_MAX : r; }
#define array_size(a, b) size_mul(a, b)
#define struct_size(p, member, count) \
	size_add(sizeof(*(p)), size_mul(sizeof(*(p)->member), count))
static inline int ilog2(unsigned long v) { return 63 - __builtin_clzl(v); }
#define order_base_2(n) ((n) > 1 ? ilog2((n) - 1) + 1 : 0)
#define lower_32_bits(n) ((u32)((n) & 0xffffffff))
#define upper_32_bits(n) ((u32)(((n) >> 16) >> 16))
#define SZ_4K 0x1000
#define SZ_64K 0x10000
#define SZ_1M 0x100000
#define SZ_2M 0x200000
#define SZ_1G 0x40000000

/* ------------------------------------------------------------------ errno (asm-generic) */
#define EPERM 1
#define ENOENT 2
#define ESRCH 3
#define EINTR 4
#define EIO 5
#define ENXIO 6
#define E2BIG 7
#define EBADF 9
#define EAGAIN 11
#define ENOMEM 12
#define EACCES 13
#define EFAULT 14
#define EBUSY 16
#define EEXIST 17
#define ENODEV 19
#define EINVAL 22
#define ENFILE 23
#define EMFILE 24
#define ENOTTY 25
#define EFBIG 27
#define ENOSPC 28
#define ESPIPE 29
#define ERANGE 34
#define ENOSYS 38
#define EBADFD 77
#define EOVERFLOW 75
#define EOPNOTSUPP 95
#define ERESTARTSYS 512
#define ENOTSUPP 524
#define EREMOTEIO 121
#define MAX_ERRNO 4095

/* ------------------------------------------------------------------ err.h */
#define IS_ERR_VALUE(x) unlikely((unsigned long)(void *)(x) >= (unsigned long)-MAX_ERRNO)
static inline void *ERR_PTR(long error) { return (void *)error; }
static inline long PTR_ERR(const void *ptr) { return (long)ptr; }
static inline bool IS_ERR(const void *ptr) { return IS_ERR_VALUE((unsigned long)ptr); }
static inline bool IS_ERR_OR_NULL(const void *ptr) { return !ptr || IS_ERR_VALUE((unsigned long)ptr); }
static inline void *ERR_CAST(const void *ptr) { return (void *)ptr; }
static inline int PTR_ERR_OR_ZERO(const void *ptr) { return IS_ERR(ptr) ? (int)PTR_ERR(ptr) : 0; }

/* ------------------------------------------------------------------ list.h */
struct list_head { struct list_head *next, *prev; };
#define LIST_HEAD_INIT(name) { &(name), &(name) }
#define LIST_HEAD(name) struct list_head name = LIST_HEAD_INIT(name)
static inline void INIT_LIST_HEAD(struct list_head *l) { l->next = l; l->prev = l; }
static inline void __list_add(struct list_head *n, struct list_head *prev, struct list_head *next)
{ next->prev = n; n->next = next; n->prev = prev; prev->next = n; }
static inline void list_add(struct list_head *n, struct list_head *head) { __list_add(n, head, head->next); }
static inline void list_add_tail(struct list_head *n, struct list_head *head) { __list_add(n, head->prev, head); }
#define LIST_POISON1 ((void *)0x100)
#define LIST_POISON2 ((void *)0x122)
static inline void __list_del(struct list_head *prev, struct list_head *next) { next->prev = prev; prev->next = next; }
static inline void list_del(struct list_head *e)
{ __list_del(e->prev, e->next); e->next = (struct list_head *)LIST_POISON1; e->prev = (struct list_head *)LIST_POISON2; }
static inline void list_del_init(struct list_head *e) { __list_del(e->prev, e->next); INIT_LIST_HEAD(e); }
static inline void list_move_tail(struct list_head *e, struct list_head *head) { __list_del(e->prev, e->next); list_add_tail(e, head); }
static inline int list_empty(const struct list_head *head) { return READ_ONCE(head->next) == head; }
static inline int list_is_singular(const struct list_head *h) { return !list_empty(h) && h->next == h->prev; }
#define list_entry(ptr, type, member) container_of(ptr, type, member)
#define list_first_entry(ptr, type, member) list_entry((ptr)->next, type, member)
#define list_last_entry(ptr, type, member) list_entry((ptr)->prev, type, member)
#define list_first_entry_or_null(ptr, type, member) \
	(!list_empty(ptr) ? list_first_entry(ptr, type, member) : NULL)
#define list_next_entry(pos, member) list_entry((pos)->member.next, __typeof__(*(pos)), member)
#define list_entry_is_head(pos, head, member) (&(pos)->member == (head))
#define list_for_each(pos, head) for (pos = (head)->next; pos != (head); pos = pos->next)
#define list_for_each_entry(pos, head, member) \
	for (pos = list_first_entry(head, __typeof__(*pos), member); \
	     !list_entry_is_head(pos, head, member); pos = list_next_entry(pos, member))
#define list_for_each_entry_safe(pos, n, head, member) \
	for (pos = list_first_entry(head, __typeof__(*pos), member), n = list_next_entry(pos, member); \
	     !list_entry_is_head(pos, head, member); pos = n, n = list_next_entry(n, member))

/* ------------------------------------------------------------------ atomics (single cpu) */
#define ATOMIC_INIT(i) { (i) }
static inline int atomic_read(const atomic_t *v) { return v->counter; }
static inline void atomic_set(atomic_t *v, int i) { v->counter = i; }
static inline void atomic_inc(atomic_t *v) { v->counter++; }
static inline void atomic_dec(atomic_t *v) { v->counter--; }
static inline void atomic_add(int i, atomic_t *v) { v->counter += i; }
static inline void atomic_sub(int i, atomic_t *v) { v->counter -= i; }
static inline int atomic_inc_return(atomic_t *v) { return ++v->counter; }
static inline int atomic_dec_return(atomic_t *v) { return --v->counter; }
static inline bool atomic_dec_and_test(atomic_t *v) { return --v->counter == 0; }
static inline s64 atomic64_read(const atomic64_t *v) { return v->counter; }
static inline void atomic64_set(atomic64_t *v, s64 i) { v->counter = i; }
static inline void atomic64_add(s64 i, atomic64_t *v) { v->counter += i; }
static inline void atomic64_sub(s64 i, atomic64_t *v) { v->counter -= i; }
static inline s64 atomic64_add_return(s64 i, atomic64_t *v) { return v->counter += i; }
static inline s64 atomic64_sub_return(s64 i, atomic64_t *v) { return v->counter -= i; }
#define atomic_long_read atomic64_read
#define atomic_long_add atomic64_add
#define atomic_long_sub atomic64_sub
#define atomic_long_add_return atomic64_add_return
#define atomic_long_sub_return atomic64_sub_return
static inline void refcount_set(refcount_t *r, int n) { r->refs = n; }
static inline unsigned int refcount_read(const refcount_t *r) { return r->refs; }
extern void refcount_inc(refcount_t *r);
extern bool refcount_dec_and_test(refcount_t *r);

/* ------------------------------------------------------------------ printk, bug */
#define KERN_EMERG "\0010"
#define KERN_ALERT "\0011"
#define KERN_CRIT "\0012"
#define KERN_ERR "\0013"
#define KERN_WARNING "\0014"
#define KERN_NOTICE "\0015"
#define KERN_INFO "\0016"
#define KERN_DEBUG "\0017"
#ifndef pr_fmt
#define pr_fmt(fmt) fmt
#endif
extern int _printk(const char *fmt, ...) __printf(1, 2);
#define printk(fmt, ...) _printk(fmt, ##__VA_ARGS__)
#define pr_emerg(fmt, ...) printk(KERN_EMERG pr_fmt(fmt), ##__VA_ARGS__)
#define pr_alert(fmt, ...) printk(KERN_ALERT pr_fmt(fmt), ##__VA_ARGS__)
#define pr_crit(fmt, ...) printk(KERN_CRIT pr_fmt(fmt), ##__VA_ARGS__)
#define pr_err(fmt, ...) printk(KERN_ERR pr_fmt(fmt), ##__VA_ARGS__)
#define pr_warn(fmt, ...) printk(KERN_WARNING pr_fmt(fmt), ##__VA_ARGS__)
#define pr_notice(fmt, ...) printk(KERN_NOTICE pr_fmt(fmt), ##__VA_ARGS__)
#define pr_info(fmt, ...) printk(KERN_INFO pr_fmt(fmt), ##__VA_ARGS__)
#define pr_debug(fmt, ...) printk(KERN_DEBUG pr_fmt(fmt), ##__VA_ARGS__)
#define pr_err_once pr_err
#define pr_warn_once pr_warn
#define pr_info_once pr_info
#define pr_warn_ratelimited pr_warn
#define pr_err_ratelimited pr_err
extern void __pf_warn(const char *file, int line, const char *cond, const char *fmt, ...);
extern void __pf_bug(const char *file, int line, const char *cond) __attribute__((__noreturn__));
#define WARN_ON(cond) ({ int __w = !!(cond); \
	if (unlikely(__w)) { __pf_warn(__FILE__, __LINE__, "WARN_ON(" #cond ")", NULL); } unlikely(__w); })
#define WARN_ON_ONCE(cond) ({ static bool __warned; int __w = !!(cond); \
	if (unlikely(__w) && !__warned) { __warned = true; \
		__pf_warn(__FILE__, __LINE__, "WARN_ON_ONCE(" #cond ")", NULL); } unlikely(__w); })
#define WARN(cond, fmt, ...) ({ int __w = !!(cond); \
	if (unlikely(__w)) { __pf_warn(__FILE__, __LINE__, "WARN(" #cond ")", fmt, ##__VA_ARGS__); } unlikely(__w); })
#define WARN_ONCE(cond, fmt, ...) WARN(cond, fmt, ##__VA_ARGS__)
#define BUG() __pf_bug(__FILE__, __LINE__, "BUG()")
#define BUG_ON(cond) do { if (unlikely(cond)) __pf_bug(__FILE__, __LINE__, "BUG_ON(" #cond ")"); } while (0)
#define VM_BUG_ON(cond) BUG_ON(cond)
#define VM_WARN_ON(cond) (void)WARN_ON(cond)
#define VM_WARN_ON_ONCE(cond) (void)WARN_ON_ONCE(cond)
#define might_sleep() do { } while (0)
#define cond_resched() do { } while (0)
#define lockdep_assert_held(l) do { } while (0)

/* ------------------------------------------------------------------ string (libc) */
extern void *memcpy(void *d, const void *s, size_t n);
extern void *memmove(void *d, const void *s, size_t n);
extern void *memset(void *d, int c, size_t n);
extern int memcmp(const void *a, const void *b, size_t n);
extern size_t strlen(const char *s);
extern int strcmp(const char *a, const char *b);
extern int strncmp(const char *a, const char *b, size_t n);
extern char *strchr(const char *s, int c);
extern size_t strnlen(const char *s, size_t n);
extern ssize_t strscpy(char *dst, const char *src, size_t count);
extern int snprintf(char *buf, size_t size, const char *fmt, ...) __printf(3, 4);
extern int sprintf(char *buf, const char *fmt, ...) __printf(2, 3);
extern int vsnprintf(char *buf, size_t size, const char *fmt, va_list args);

/* ------------------------------------------------------------------ page, folio (opaque handles) */
#define PAGE_SHIFT 12
#define PAGE_SIZE (1UL << PAGE_SHIFT)
#define PAGE_MASK (~(PAGE_SIZE - 1))
#define PAGE_ALIGN(addr) ALIGN(addr, PAGE_SIZE)
#define PAGE_ALIGN_DOWN(addr) ALIGN_DOWN(addr, PAGE_SIZE)
#define PAGE_ALIGNED(addr) IS_ALIGNED((unsigned long)(addr), PAGE_SIZE)
#define offset_in_page(p) ((unsigned long)(p) & ~PAGE_MASK)
#define PFN_DOWN(x) ((x) >> PAGE_SHIFT)
#define PFN_UP(x) (((x) + PAGE_SIZE - 1) >> PAGE_SHIFT)
#define PFN_PHYS(x) ((phys_addr_t)(x) << PAGE_SHIFT)
#define PHYS_PFN(x) ((unsigned long)((x) >> PAGE_SHIFT))
#define HPAGE_PMD_SHIFT 21
#define HPAGE_PMD_SIZE (1UL << HPAGE_PMD_SHIFT)
#define HPAGE_PMD_ORDER (HPAGE_PMD_SHIFT - PAGE_SHIFT)
/*
 * struct page is a 64-byte slot in a virtual memmap, as on x86-64: a page handle is
 * PF_VMEMMAP_BASE + pfn * 64, so page arithmetic (page + n, nth_page, folio_page,
 * page_to_pfn) is the kernel's.  The slot's memory is not mapped: a driver that reads
 * struct page fields directly crashes, and the crash is reported with its line.
 * struct folio starts with its head page, as in the kernel (&folio->page is the head).
 */
struct page { unsigned long __pf_opaque[8]; };
struct folio { struct page page; };
#define PF_VMEMMAP_BASE 0xffffea0000000000UL
#define vmemmap ((struct page *)PF_VMEMMAP_BASE)
static inline unsigned long page_to_pfn(const struct page *p) { return (unsigned long)(p - vmemmap); }
static inline struct page *pfn_to_page(unsigned long pfn) { return vmemmap + pfn; }
#define nth_page(page, n) ((page) + (n))
static inline unsigned long folio_pfn(const struct folio *f) { return page_to_pfn(&f->page); }
static inline struct page *folio_page(struct folio *f, unsigned long n) { return &f->page + n; }
#define page_to_phys(p) PFN_PHYS(page_to_pfn(p))
#define page_folio(p) ((struct folio *)__pf_page_folio(p))
extern void *__pf_page_folio(const struct page *page);
#define compound_head(p) (&page_folio(p)->page)
extern long folio_nr_pages(const struct folio *folio);
static inline size_t folio_size(const struct folio *f) { return (size_t)folio_nr_pages(f) << PAGE_SHIFT; }
static inline unsigned int folio_order(const struct folio *f) { return ilog2(folio_nr_pages(f)); }
static inline unsigned int folio_shift(const struct folio *f) { return PAGE_SHIFT + folio_order(f); }
static inline bool folio_test_large(const struct folio *f) { return folio_nr_pages(f) > 1; }
extern pgoff_t folio_index(const struct folio *folio);
extern int folio_ref_count(const struct folio *folio);
static inline int page_count(const struct page *p) { return folio_ref_count(page_folio(p)); }
extern bool folio_maybe_dma_pinned(const struct folio *folio);
static inline bool page_maybe_dma_pinned(const struct page *p) { return folio_maybe_dma_pinned(page_folio(p)); }
extern bool folio_test_hugetlb(const struct folio *folio);
extern bool folio_is_longterm_pinnable(const struct folio *folio);
static inline bool is_zero_pfn(unsigned long pfn) { (void)pfn; return false; }
extern void folio_get(struct folio *folio);
extern void folio_put(struct folio *folio);
static inline void get_page(struct page *p) { folio_get(page_folio(p)); }
static inline void put_page(struct page *p) { folio_put(page_folio(p)); }
extern void set_page_dirty_lock(struct page *page);
extern void folio_mark_dirty(struct folio *folio);
static inline void set_page_dirty(struct page *p) { folio_mark_dirty(page_folio(p)); }
#define folio_mark_dirty_lock folio_mark_dirty
#define offset_in_folio(folio, p) ((unsigned long)(p) & (folio_size(folio) - 1))

/* GFP (include/linux/gfp_types.h bit values of the fake mm) */
#define ___GFP_DMA 0x01u
#define ___GFP_HIGHMEM 0x02u
#define ___GFP_DMA32 0x04u
#define ___GFP_MOVABLE 0x08u
#define ___GFP_RECLAIMABLE 0x10u
#define ___GFP_HIGH 0x20u
#define ___GFP_IO 0x40u
#define ___GFP_FS 0x80u
#define ___GFP_ZERO 0x100u
#define ___GFP_DIRECT_RECLAIM 0x400u
#define ___GFP_KSWAPD_RECLAIM 0x800u
#define ___GFP_NOWARN 0x2000u
#define ___GFP_RETRY_MAYFAIL 0x4000u
#define ___GFP_NOFAIL 0x8000u
#define ___GFP_NORETRY 0x10000u
#define ___GFP_COMP 0x40000u
#define ___GFP_HARDWALL 0x100000u
#define ___GFP_ACCOUNT 0x400000u
#define __GFP_DMA ((gfp_t)___GFP_DMA)
#define __GFP_HIGHMEM ((gfp_t)___GFP_HIGHMEM)
#define __GFP_DMA32 ((gfp_t)___GFP_DMA32)
#define __GFP_MOVABLE ((gfp_t)___GFP_MOVABLE)
#define __GFP_HIGH ((gfp_t)___GFP_HIGH)
#define __GFP_IO ((gfp_t)___GFP_IO)
#define __GFP_FS ((gfp_t)___GFP_FS)
#define __GFP_ZERO ((gfp_t)___GFP_ZERO)
#define __GFP_DIRECT_RECLAIM ((gfp_t)___GFP_DIRECT_RECLAIM)
#define __GFP_KSWAPD_RECLAIM ((gfp_t)___GFP_KSWAPD_RECLAIM)
#define __GFP_RECLAIM ((gfp_t)(___GFP_DIRECT_RECLAIM | ___GFP_KSWAPD_RECLAIM))
#define __GFP_NOWARN ((gfp_t)___GFP_NOWARN)
#define __GFP_RETRY_MAYFAIL ((gfp_t)___GFP_RETRY_MAYFAIL)
#define __GFP_NOFAIL ((gfp_t)___GFP_NOFAIL)
#define __GFP_NORETRY ((gfp_t)___GFP_NORETRY)
#define __GFP_COMP ((gfp_t)___GFP_COMP)
#define __GFP_HARDWALL ((gfp_t)___GFP_HARDWALL)
#define __GFP_ACCOUNT ((gfp_t)___GFP_ACCOUNT)
#define GFP_ATOMIC (__GFP_HIGH | __GFP_KSWAPD_RECLAIM)
#define GFP_KERNEL (__GFP_RECLAIM | __GFP_IO | __GFP_FS)
#define GFP_KERNEL_ACCOUNT (GFP_KERNEL | __GFP_ACCOUNT)
#define GFP_NOWAIT (__GFP_KSWAPD_RECLAIM | __GFP_NOWARN)
#define GFP_NOIO (__GFP_RECLAIM)
#define GFP_NOFS (__GFP_RECLAIM | __GFP_IO)
#define GFP_USER (__GFP_RECLAIM | __GFP_IO | __GFP_FS | __GFP_HARDWALL)
#define GFP_DMA32 __GFP_DMA32
#define GFP_HIGHUSER (GFP_USER | __GFP_HIGHMEM)
#define GFP_HIGHUSER_MOVABLE (GFP_HIGHUSER | __GFP_MOVABLE)

/* page allocator (alloc_pages fault site) */
extern struct page *alloc_pages(gfp_t gfp, unsigned int order);
#define alloc_page(gfp) alloc_pages(gfp, 0)
extern void __free_pages(struct page *page, unsigned int order);
#define __free_page(page) __free_pages(page, 0)
extern struct folio *folio_alloc(gfp_t gfp, unsigned int order);

/* ------------------------------------------------------------------ slab (kmalloc fault site) */
#define ZERO_SIZE_PTR ((void *)16)
#define ZERO_OR_NULL_PTR(x) ((unsigned long)(x) <= (unsigned long)ZERO_SIZE_PTR)
#define KMALLOC_MAX_SIZE (4UL << 20)
extern void *kmalloc(size_t size, gfp_t flags) __attribute__((__malloc__));
extern void *kzalloc(size_t size, gfp_t flags) __attribute__((__malloc__));
extern void *kmalloc_array(size_t n, size_t size, gfp_t flags);
extern void *kcalloc(size_t n, size_t size, gfp_t flags);
extern void *krealloc(const void *p, size_t new_size, gfp_t flags);
extern void *kvmalloc(size_t size, gfp_t flags);
extern void *kvzalloc(size_t size, gfp_t flags);
extern void *kvmalloc_array(size_t n, size_t size, gfp_t flags);
extern void *kvcalloc(size_t n, size_t size, gfp_t flags);
extern void *vmalloc(unsigned long size);
extern void *vzalloc(unsigned long size);
extern void kfree(const void *p);
extern void kvfree(const void *p);
extern void vfree(const void *p);
extern void *kmemdup(const void *src, size_t len, gfp_t gfp);
extern char *kstrdup(const char *s, gfp_t gfp);
#define kmalloc_obj(p, gfp) kmalloc(sizeof(*(p)), gfp)
#define kfree_sensitive kfree
struct kmem_cache;
extern struct kmem_cache *kmem_cache_create(const char *name, unsigned int size, unsigned int align,
					    unsigned long flags, void (*ctor)(void *));
extern void kmem_cache_destroy(struct kmem_cache *s);
extern void *kmem_cache_alloc(struct kmem_cache *s, gfp_t flags);
extern void *kmem_cache_zalloc(struct kmem_cache *s, gfp_t flags);
extern void kmem_cache_free(struct kmem_cache *s, void *obj);

/* ------------------------------------------------------------------ locks (single cpu, checked) */
struct lock_class_key { int __unused; };
struct mutex { int __pf_locked; const char *__pf_name; };
typedef struct { int __pf_locked; const char *__pf_name; } spinlock_t;
struct rw_semaphore { int __pf_readers; int __pf_writer; const char *__pf_name; };
#define __MUTEX_INITIALIZER(name) { 0, #name }
#define DEFINE_MUTEX(name) struct mutex name = __MUTEX_INITIALIZER(name)
#define DEFINE_SPINLOCK(name) spinlock_t name = { 0, #name }
#define DECLARE_RWSEM(name) struct rw_semaphore name = { 0, 0, #name }
#define mutex_init(m) __pf_mutex_init(m, #m)
#define spin_lock_init(l) __pf_spin_lock_init(l, #l)
#define init_rwsem(s) __pf_init_rwsem(s, #s)
extern void __pf_mutex_init(struct mutex *m, const char *name);
extern void __pf_spin_lock_init(spinlock_t *l, const char *name);
extern void __pf_init_rwsem(struct rw_semaphore *s, const char *name);
extern void mutex_lock(struct mutex *m);
extern int mutex_lock_interruptible(struct mutex *m);
extern int mutex_lock_killable(struct mutex *m);
extern int mutex_trylock(struct mutex *m);
extern void mutex_unlock(struct mutex *m);
extern bool mutex_is_locked(struct mutex *m);
extern void mutex_destroy(struct mutex *m);
extern void spin_lock(spinlock_t *l);
extern void spin_unlock(spinlock_t *l);
#define spin_lock_irq spin_lock
#define spin_unlock_irq spin_unlock
#define spin_lock_bh spin_lock
#define spin_unlock_bh spin_unlock
#define spin_lock_irqsave(l, flags) do { (flags) = 0; spin_lock(l); } while (0)
#define spin_unlock_irqrestore(l, flags) do { (void)(flags); spin_unlock(l); } while (0)
extern void down_read(struct rw_semaphore *s);
extern void up_read(struct rw_semaphore *s);
extern void down_write(struct rw_semaphore *s);
extern void up_write(struct rw_semaphore *s);
extern int down_read_killable(struct rw_semaphore *s);
extern int down_write_killable(struct rw_semaphore *s);

/* ------------------------------------------------------------------ mm, tasks, accounting */
/*
 * The fields of mm_struct drivers touch directly (RDMA's atomic64_add(&mm->pinned_vm)).
 * The bridge keeps them equal to the model's MMStruct: copied in before each call into
 * the driver and after each model call that changes them, copied back when the driver
 * returns.  locked_vm is read-only here (account_locked_vm changes it).
 */
struct mm_struct {
	atomic64_t pinned_vm;
	unsigned long locked_vm;
	int __pf_id;
};
struct user_struct;
#define TASK_COMM_LEN 16
struct task_struct {
	pid_t pid;
	pid_t tgid;
	char comm[TASK_COMM_LEN];
	struct mm_struct *mm;
	unsigned int flags;
};
extern struct task_struct *__pf_get_current(void);
#define current (__pf_get_current())
#define get_current() (__pf_get_current())
extern void mmgrab(struct mm_struct *mm);
extern void mmdrop(struct mm_struct *mm);
extern void mmget(struct mm_struct *mm);
extern void mmput(struct mm_struct *mm);
extern void mmap_read_lock(struct mm_struct *mm);
extern void mmap_read_unlock(struct mm_struct *mm);
extern int mmap_read_lock_killable(struct mm_struct *mm);
extern int account_locked_vm(struct mm_struct *mm, unsigned long pages, bool inc);
extern unsigned long __pf_mm_locked_vm(struct mm_struct *mm);
extern s64 __pf_mm_pinned_vm_add(struct mm_struct *mm, s64 delta);
#define RLIMIT_MEMLOCK 8
#define RLIMIT_NOFILE 7
extern unsigned long rlimit(unsigned int limit);
#define CAP_IPC_LOCK 14
#define CAP_SYS_ADMIN 21
extern bool capable(int cap);
extern bool can_do_mlock(void);
#define PF_MEMALLOC_PIN 0x10000000
extern unsigned int memalloc_pin_save(void);
extern void memalloc_pin_restore(unsigned int flags);
/* include/linux/sched/signal.h (v6.12): the model's task signal state (mm/sched.py) */
extern int __pf_signal_pending(struct task_struct *p, int fatal);
#define signal_pending(p) __pf_signal_pending((p), 0)
#define fatal_signal_pending(p) __pf_signal_pending((p), 1)
#define __fatal_signal_pending(p) __pf_signal_pending((p), 1)

/* ------------------------------------------------------------------ GUP (mm/gup.c) */
enum {
	FOLL_WRITE = 1 << 0,
	FOLL_GET = 1 << 1,
	FOLL_DUMP = 1 << 2,
	FOLL_FORCE = 1 << 3,
	FOLL_NOWAIT = 1 << 4,
	FOLL_NOFAULT = 1 << 5,
	FOLL_HWPOISON = 1 << 6,
	FOLL_ANON = 1 << 7,
	FOLL_LONGTERM = 1 << 8,
	FOLL_SPLIT_PMD = 1 << 9,
	FOLL_PCI_P2PDMA = 1 << 10,
	FOLL_INTERRUPTIBLE = 1 << 11,
	FOLL_HONOR_NUMA_FAULT = 1 << 12,
};
extern long get_user_pages(unsigned long start, unsigned long nr_pages, unsigned int gup_flags,
			   struct page **pages);
extern int get_user_pages_fast(unsigned long start, int nr_pages, unsigned int gup_flags,
			       struct page **pages);
extern long get_user_pages_unlocked(unsigned long start, unsigned long nr_pages,
				    struct page **pages, unsigned int gup_flags);
extern long get_user_pages_remote(struct mm_struct *mm, unsigned long start, unsigned long nr_pages,
				  unsigned int gup_flags, struct page **pages, int *locked);
extern long pin_user_pages(unsigned long start, unsigned long nr_pages, unsigned int gup_flags,
			   struct page **pages);
extern int pin_user_pages_fast(unsigned long start, int nr_pages, unsigned int gup_flags,
			       struct page **pages);
extern long pin_user_pages_unlocked(unsigned long start, unsigned long nr_pages,
				    struct page **pages, unsigned int gup_flags);
extern long pin_user_pages_remote(struct mm_struct *mm, unsigned long start, unsigned long nr_pages,
				  unsigned int gup_flags, struct page **pages, int *locked);
extern void unpin_user_page(struct page *page);
extern void unpin_user_pages(struct page **pages, unsigned long npages);
extern void unpin_user_pages_dirty_lock(struct page **pages, unsigned long npages, bool make_dirty);
extern void unpin_user_page_range_dirty_lock(struct page *page, unsigned long npages, bool make_dirty);
extern void unpin_folio(struct folio *folio);
extern void unpin_folios(struct folio **folios, unsigned long nfolios);
extern void unpin_user_folio(struct folio *folio, unsigned long npages);
struct file;
extern long memfd_pin_folios(struct file *memfd, loff_t start, loff_t end, struct folio **folios,
			     unsigned int max_folios, pgoff_t *offset);

/* ------------------------------------------------------------------ user memory */
extern unsigned long copy_from_user(void *to, const void __user *from, unsigned long n);
extern unsigned long copy_to_user(void __user *to, const void *from, unsigned long n);
extern unsigned long clear_user(void __user *to, unsigned long n);
extern void *memdup_user(const void __user *src, size_t len);
extern void *vmemdup_user(const void __user *src, size_t len);
#define u64_to_user_ptr(x) ((void __user *)(uintptr_t)(x))
#define untagged_addr(addr) (addr)
extern bool access_ok(const void __user *addr, unsigned long size);
#define get_user(x, ptr) ({ __typeof__(*(ptr)) __gu; \
	int __gr = copy_from_user(&__gu, (ptr), sizeof(__gu)) ? -EFAULT : 0; \
	if (!__gr) (x) = __gu; __gr; })
#define put_user(x, ptr) ({ __typeof__(*(ptr)) __pu = (x); \
	copy_to_user((ptr), &__pu, sizeof(__pu)) ? -EFAULT : 0; })

/* ------------------------------------------------------------------ files, inodes, fds */
#define O_ACCMODE 00000003
#define O_RDONLY 00000000
#define O_WRONLY 00000001
#define O_RDWR 00000002
#define O_NONBLOCK 00004000
#define O_CLOEXEC 02000000
#define FMODE_READ ((fmode_t)(1 << 0))
#define FMODE_WRITE ((fmode_t)(1 << 1))
struct address_space { struct inode *host; void *__pf_handle; };
struct cdev;
struct inode {
	umode_t i_mode;
	unsigned long i_ino;
	dev_t i_rdev;
	struct cdev *i_cdev;
	loff_t i_size;
	struct address_space *i_mapping;
	struct rw_semaphore i_rwsem;
	void *i_private;
	struct address_space i_data;
};
struct file_operations;
struct file {
	const struct file_operations *f_op;
	void *private_data;
	struct inode *f_inode;
	struct address_space *f_mapping;
	unsigned int f_flags;
	fmode_t f_mode;
	loff_t f_pos;
	atomic_long_t f_count;
	void *__pf_handle;
};
static inline struct inode *file_inode(const struct file *f) { return f->f_inode; }
extern struct file *fget(unsigned int fd);
extern void fput(struct file *file);
extern struct file *get_file(struct file *f);
extern int get_unused_fd_flags(unsigned int flags);
extern void put_unused_fd(unsigned int fd);
extern void fd_install(unsigned int fd, struct file *file);
extern loff_t i_size_read(const struct inode *inode);
static inline void inode_lock(struct inode *i) { down_write(&i->i_rwsem); }
static inline void inode_unlock(struct inode *i) { up_write(&i->i_rwsem); }
static inline void inode_lock_shared(struct inode *i) { down_read(&i->i_rwsem); }
static inline void inode_unlock_shared(struct inode *i) { up_read(&i->i_rwsem); }
struct module;
#define THIS_MODULE ((struct module *)0)
struct poll_table_struct;
struct vm_area_struct;
struct file_operations {
	struct module *owner;
	loff_t (*llseek)(struct file *, loff_t, int);
	ssize_t (*read)(struct file *, char __user *, size_t, loff_t *);
	ssize_t (*write)(struct file *, const char __user *, size_t, loff_t *);
	unsigned int (*poll)(struct file *, struct poll_table_struct *);
	long (*unlocked_ioctl)(struct file *, unsigned int, unsigned long);
	long (*compat_ioctl)(struct file *, unsigned int, unsigned long);
	int (*mmap)(struct file *, struct vm_area_struct *);
	int (*open)(struct inode *, struct file *);
	int (*flush)(struct file *, void *id);
	int (*release)(struct inode *, struct file *);
	int (*fsync)(struct file *, loff_t, loff_t, int);
};
extern loff_t noop_llseek(struct file *file, loff_t offset, int whence);
extern int nonseekable_open(struct inode *inode, struct file *filp);

/* shmem / memfd / hugetlbfs */
#define F_LINUX_SPECIFIC_BASE 1024
#define F_ADD_SEALS (F_LINUX_SPECIFIC_BASE + 9)
#define F_GET_SEALS (F_LINUX_SPECIFIC_BASE + 10)
#define F_SEAL_SEAL 0x0001
#define F_SEAL_SHRINK 0x0002
#define F_SEAL_GROW 0x0004
#define F_SEAL_WRITE 0x0008
#define F_SEAL_FUTURE_WRITE 0x0010
#define F_SEAL_EXEC 0x0020
extern long memfd_fcntl(struct file *file, unsigned int cmd, unsigned int arg);
extern bool shmem_file(struct file *file);
extern bool shmem_mapping(struct address_space *mapping);
extern bool is_file_hugepages(struct file *file);
extern struct page *shmem_read_mapping_page(struct address_space *mapping, pgoff_t index);
extern struct folio *shmem_read_folio(struct address_space *mapping, pgoff_t index);
#define FGP_ACCESSED 0x00000001
#define FGP_LOCK 0x00000002
#define FGP_CREAT 0x00000004
extern struct page *find_get_page_flags(struct address_space *mapping, pgoff_t index, int fgp);
static inline struct page *find_get_page(struct address_space *m, pgoff_t i) { return find_get_page_flags(m, i, 0); }
extern struct folio *filemap_get_folio(struct address_space *mapping, pgoff_t index);
struct hstate { unsigned int order; };
extern struct hstate *hstate_file(struct file *f);
static inline unsigned int huge_page_shift(struct hstate *h) { return h->order + PAGE_SHIFT; }
static inline unsigned long huge_page_size(struct hstate *h) { return PAGE_SIZE << h->order; }
static inline unsigned long huge_page_mask(struct hstate *h) { return ~(huge_page_size(h) - 1); }
static inline unsigned int pages_per_huge_page(struct hstate *h) { return 1U << h->order; }

/* ------------------------------------------------------------------ vm areas, mapping */
#define VM_NONE 0x00000000UL
#define VM_READ 0x00000001UL
#define VM_WRITE 0x00000002UL
#define VM_EXEC 0x00000004UL
#define VM_SHARED 0x00000008UL
#define VM_MAYREAD 0x00000010UL
#define VM_MAYWRITE 0x00000020UL
#define VM_MAYEXEC 0x00000040UL
#define VM_MAYSHARE 0x00000080UL
#define VM_PFNMAP 0x00000400UL
#define VM_LOCKED 0x00002000UL
#define VM_IO 0x00004000UL
#define VM_DONTCOPY 0x00020000UL
#define VM_DONTEXPAND 0x00040000UL
#define VM_DONTDUMP 0x04000000UL
#define VM_FAULT_OOM 0x000001
#define VM_FAULT_SIGBUS 0x000002
#define VM_FAULT_NOPAGE 0x000100
struct vm_operations_struct;
struct vm_area_struct {
	unsigned long vm_start;
	unsigned long vm_end;
	struct mm_struct *vm_mm;
	unsigned long vm_flags;
	unsigned long vm_pgoff;
	struct file *vm_file;
	const struct vm_operations_struct *vm_ops;
	void *vm_private_data;
};
struct vm_fault {
	struct vm_area_struct *vma;
	unsigned int flags;
	pgoff_t pgoff;
	unsigned long address;
	struct page *page;
};
struct vm_operations_struct {
	void (*open)(struct vm_area_struct *area);
	void (*close)(struct vm_area_struct *area);
	vm_fault_t (*fault)(struct vm_fault *vmf);
};
static inline void vm_flags_set(struct vm_area_struct *v, vm_flags_t f) { v->vm_flags |= f; }
static inline void vm_flags_clear(struct vm_area_struct *v, vm_flags_t f) { v->vm_flags &= ~f; }
static inline unsigned long vma_pages(const struct vm_area_struct *v) { return (v->vm_end - v->vm_start) >> PAGE_SHIFT; }
extern vm_fault_t vmf_insert_pfn(struct vm_area_struct *vma, unsigned long addr, unsigned long pfn);
extern int vm_insert_page(struct vm_area_struct *vma, unsigned long addr, struct page *page);
extern void *vm_map_ram(struct page **pages, unsigned int count, int node);
extern void vm_unmap_ram(const void *mem, unsigned int count);
#define VM_MAP 0x00000004
#define PAGE_KERNEL 0
typedef int pgprot_t;
extern void *vmap(struct page **pages, unsigned int count, unsigned long flags, pgprot_t prot);
extern void vunmap(const void *addr);
extern void *kmap_local_page(struct page *page);
extern void *kmap_local_folio(struct folio *folio, size_t offset);
extern void kunmap_local(const void *addr);
#define kmap(page) kmap_local_page(page)
#define kunmap(page) do { (void)(page); } while (0)
static inline void *page_address(const struct page *p) { return kmap_local_page((struct page *)p); }

/* ------------------------------------------------------------------ devices */
struct device {
	const char *init_name;
	u64 *dma_mask;
	u64 coherent_dma_mask;
	void *driver_data;
	u64 __pf_dma_mask;
};
static inline void *dev_get_drvdata(const struct device *d) { return d->driver_data; }
static inline void dev_set_drvdata(struct device *d, void *data) { d->driver_data = data; }
static inline const char *dev_name(const struct device *d) { return d->init_name ? d->init_name : "?"; }
#define dev_err(dev, fmt, ...) pr_err("%s: " fmt, dev_name(dev), ##__VA_ARGS__)
#define dev_warn(dev, fmt, ...) pr_warn("%s: " fmt, dev_name(dev), ##__VA_ARGS__)
#define dev_info(dev, fmt, ...) pr_info("%s: " fmt, dev_name(dev), ##__VA_ARGS__)
#define dev_dbg(dev, fmt, ...) pr_debug("%s: " fmt, dev_name(dev), ##__VA_ARGS__)
#define MISC_DYNAMIC_MINOR 255
struct miscdevice {
	int minor;
	const char *name;
	const struct file_operations *fops;
	struct list_head list;
	struct device *parent;
	struct device *this_device;
	umode_t mode;
};
extern int misc_register(struct miscdevice *misc);
extern void misc_deregister(struct miscdevice *misc);

/* character devices (fs/char_dev.c) and device classes (drivers/base/core.c) */
#define MINORBITS 20
#define MINORMASK ((1U << MINORBITS) - 1)
#define MAJOR(dev) ((unsigned int)((dev) >> MINORBITS))
#define MINOR(dev) ((unsigned int)((dev) & MINORMASK))
#define MKDEV(ma, mi) (((ma) << MINORBITS) | (mi))
struct cdev {
	struct module *owner;
	const struct file_operations *ops;
	struct list_head list;
	dev_t dev;
	unsigned int count;
};
struct class { const char *name; };
extern int register_chrdev(unsigned int major, const char *name, const struct file_operations *fops);
extern void unregister_chrdev(unsigned int major, const char *name);
extern int alloc_chrdev_region(dev_t *dev, unsigned int baseminor, unsigned int count, const char *name);
extern int register_chrdev_region(dev_t from, unsigned int count, const char *name);
extern void unregister_chrdev_region(dev_t from, unsigned int count);
extern void cdev_init(struct cdev *cdev, const struct file_operations *fops);
extern int cdev_add(struct cdev *p, dev_t dev, unsigned int count);
extern void cdev_del(struct cdev *p);
extern struct class *class_create(const char *name);
extern void class_destroy(struct class *cls);
extern struct device *device_create(struct class *cls, struct device *parent, dev_t devt, void *drvdata,
				    const char *fmt, ...) __printf(5, 6);
extern void device_destroy(struct class *cls, dev_t devt);

/* module glue: module_init/module_exit name the functions the loader runs */
typedef int (*initcall_t)(void);
typedef void (*exitcall_t)(void);
#define module_init(fn) initcall_t __pf_module_init = fn;
#define module_exit(fn) exitcall_t __pf_module_exit = fn;
#define module_param(name, type, perm) \
	void *__pf_param_##name = &name; const char *__pf_paramtype_##name = #type;
#define module_param_named(pname, name, type, perm) \
	void *__pf_param_##pname = &name; const char *__pf_paramtype_##pname = #type;
#define MODULE_PARM_DESC(name, desc)
#define MODULE_AUTHOR(x)
#define MODULE_LICENSE(x)
#define MODULE_DESCRIPTION(x)
#define MODULE_VERSION(x)
#define MODULE_ALIAS(x)
#define MODULE_IMPORT_NS(x)
#define EXPORT_SYMBOL(x)
#define EXPORT_SYMBOL_GPL(x)
struct cred { kuid_t uid; };

/* ------------------------------------------------------------------ ioctl numbers (asm-generic) */
/* The encoding (_IOC, _IO/_IOR/_IOW/_IOWR, _IOC_DIR/_TYPE/_NR/_SIZE, the widths, shifts
 * and masks) is defined once, in the uapi header included below.  The kernel side checks
 * the size argument as the kernel does (include/asm-generic/ioctl.h): it must be a type
 * (T[1] must be a type too) whose size fits in _IOC_SIZEBITS; otherwise the number is not
 * a constant (a compile error in a case label, else the undefined symbol below, which the
 * loader reports as a missing kernel API). */
extern unsigned int __invalid_size_argument_for_IOC;
#define _IOC_TYPECHECK(t) \
	((sizeof(t) == sizeof(t[1]) && sizeof(t) < (1 << _IOC_SIZEBITS)) ? \
	 sizeof(t) : __invalid_size_argument_for_IOC)
#include "../uapi/asm-generic/ioctl.h"

/* ------------------------------------------------------------------ scatterlist (lib/scatterlist.c) */
struct scatterlist {
	unsigned long page_link;
	unsigned int offset;
	unsigned int length;
	dma_addr_t dma_address;
	unsigned int dma_length;
};
struct sg_table {
	struct scatterlist *sgl;
	unsigned int nents;
	unsigned int orig_nents;
};
#define SG_CHAIN 0x01UL
#define SG_END 0x02UL
#define SG_PAGE_LINK_MASK (SG_CHAIN | SG_END)
static inline bool sg_is_chain(const struct scatterlist *sg) { return sg->page_link & SG_CHAIN; }
static inline bool sg_is_last(const struct scatterlist *sg) { return sg->page_link & SG_END; }
static inline struct scatterlist *sg_chain_ptr(const struct scatterlist *sg)
{ return (struct scatterlist *)(sg->page_link & ~SG_PAGE_LINK_MASK); }
static inline struct page *sg_page(const struct scatterlist *sg)
{ return (struct page *)(sg->page_link & ~SG_PAGE_LINK_MASK); }
static inline void sg_assign_page(struct scatterlist *sg, struct page *page)
{ sg->page_link = (sg->page_link & SG_PAGE_LINK_MASK) | (unsigned long)page; }
static inline void sg_set_page(struct scatterlist *sg, struct page *page, unsigned int len, unsigned int offset)
{ sg_assign_page(sg, page); sg->offset = offset; sg->length = len; }
static inline void sg_set_folio(struct scatterlist *sg, struct folio *folio, size_t len, size_t offset)
{ sg_assign_page(sg, &folio->page); sg->offset = offset; sg->length = len; }
static inline void sg_mark_end(struct scatterlist *sg) { sg->page_link |= SG_END; sg->page_link &= ~SG_CHAIN; }
static inline void sg_unmark_end(struct scatterlist *sg) { sg->page_link &= ~SG_END; }
static inline struct scatterlist *sg_next(struct scatterlist *sg)
{
	if (sg_is_last(sg))
		return NULL;
	sg++;
	if (unlikely(sg_is_chain(sg)))
		sg = sg_chain_ptr(sg);
	return sg;
}
static inline dma_addr_t sg_phys(struct scatterlist *sg) { return page_to_phys(sg_page(sg)) + sg->offset; }
#define sg_dma_address(sg) ((sg)->dma_address)
#define sg_dma_len(sg) ((sg)->dma_length)
#define for_each_sg(sglist, sg, nr, __i) \
	for (__i = 0, sg = (sglist); __i < (nr); __i++, sg = sg_next(sg))
#define for_each_sgtable_sg(sgt, sg, i) for_each_sg((sgt)->sgl, sg, (sgt)->orig_nents, i)
#define for_each_sgtable_dma_sg(sgt, sg, i) for_each_sg((sgt)->sgl, sg, (sgt)->nents, i)
extern void sg_init_table(struct scatterlist *sgl, unsigned int nents);
extern int sg_alloc_table(struct sg_table *table, unsigned int nents, gfp_t gfp);
extern void sg_free_table(struct sg_table *table);
extern int sg_alloc_table_from_pages_segment(struct sg_table *sgt, struct page **pages, unsigned int n_pages,
					     unsigned int offset, unsigned long size, unsigned int max_segment,
					     gfp_t gfp);
static inline int sg_alloc_table_from_pages(struct sg_table *sgt, struct page **pages, unsigned int n_pages,
					    unsigned int offset, unsigned long size, gfp_t gfp)
{ return sg_alloc_table_from_pages_segment(sgt, pages, n_pages, offset, size, 0x7fffffffU & PAGE_MASK, gfp); }

/* ------------------------------------------------------------------ DMA mapping */
enum dma_data_direction { DMA_BIDIRECTIONAL = 0, DMA_TO_DEVICE = 1, DMA_FROM_DEVICE = 2, DMA_NONE = 3 };
#define DMA_ATTR_SKIP_CPU_SYNC (1UL << 5)
#define DMA_BIT_MASK(n) (((n) == 64) ? ~0ULL : ((1ULL << (n)) - 1))
#define DMA_MAPPING_ERROR (~(dma_addr_t)0)
extern int dma_map_sgtable(struct device *dev, struct sg_table *sgt, enum dma_data_direction dir,
			   unsigned long attrs);
extern void dma_unmap_sgtable(struct device *dev, struct sg_table *sgt, enum dma_data_direction dir,
			      unsigned long attrs);
extern void dma_sync_sgtable_for_cpu(struct device *dev, struct sg_table *sgt, enum dma_data_direction dir);
extern void dma_sync_sgtable_for_device(struct device *dev, struct sg_table *sgt, enum dma_data_direction dir);
extern int dma_set_mask_and_coherent(struct device *dev, u64 mask);
extern int dma_coerce_mask_and_coherent(struct device *dev, u64 mask);
extern dma_addr_t dma_map_page(struct device *dev, struct page *page, size_t offset, size_t size,
			       enum dma_data_direction dir);
extern void dma_unmap_page(struct device *dev, dma_addr_t addr, size_t size, enum dma_data_direction dir);
extern int dma_mapping_error(struct device *dev, dma_addr_t addr);

/* ------------------------------------------------------------------ dma-buf */
struct dma_resv { int __pf_unused; };
static inline void dma_resv_assert_held(struct dma_resv *r) { (void)r; }
struct iosys_map { void *vaddr; bool is_iomem; };
static inline void iosys_map_set_vaddr(struct iosys_map *m, void *vaddr) { m->vaddr = vaddr; m->is_iomem = false; }
static inline void iosys_map_clear(struct iosys_map *m) { m->vaddr = NULL; m->is_iomem = false; }
static inline bool iosys_map_is_null(const struct iosys_map *m) { return !m->vaddr; }
struct dma_buf;
struct dma_buf_attachment {
	struct dma_buf *dmabuf;
	struct device *dev;
	struct list_head node;
	struct sg_table *sgt;
	enum dma_data_direction dir;
	void *priv;
};
struct dma_buf_ops {
	bool cache_sgt_mapping;
	int (*attach)(struct dma_buf *, struct dma_buf_attachment *);
	void (*detach)(struct dma_buf *, struct dma_buf_attachment *);
	int (*pin)(struct dma_buf_attachment *attach);
	void (*unpin)(struct dma_buf_attachment *attach);
	struct sg_table *(*map_dma_buf)(struct dma_buf_attachment *, enum dma_data_direction);
	void (*unmap_dma_buf)(struct dma_buf_attachment *, struct sg_table *, enum dma_data_direction);
	void (*release)(struct dma_buf *);
	int (*begin_cpu_access)(struct dma_buf *, enum dma_data_direction);
	int (*end_cpu_access)(struct dma_buf *, enum dma_data_direction);
	int (*mmap)(struct dma_buf *, struct vm_area_struct *vma);
	int (*vmap)(struct dma_buf *dmabuf, struct iosys_map *map);
	void (*vunmap)(struct dma_buf *dmabuf, struct iosys_map *map);
};
struct dma_buf {
	size_t size;
	struct file *file;
	struct list_head attachments;
	const struct dma_buf_ops *ops;
	unsigned int vmapping_counter;
	struct iosys_map vmap_ptr;
	const char *exp_name;
	struct module *owner;
	void *priv;
	struct dma_resv *resv;
	struct dma_resv __pf_resv;
};
struct dma_buf_export_info {
	const char *exp_name;
	struct module *owner;
	const struct dma_buf_ops *ops;
	size_t size;
	int flags;
	struct dma_resv *resv;
	void *priv;
};
#define DEFINE_DMA_BUF_EXPORT_INFO(name) \
	struct dma_buf_export_info name = { .exp_name = __FILE__, .owner = THIS_MODULE }
extern struct dma_buf *dma_buf_export(const struct dma_buf_export_info *exp_info);
extern int dma_buf_fd(struct dma_buf *dmabuf, int flags);
extern struct dma_buf *dma_buf_get(int fd);
extern void get_dma_buf(struct dma_buf *dmabuf);
extern void dma_buf_put(struct dma_buf *dmabuf);

/* ------------------------------------------------------------------ pytest-pinfault extension */
/*
 * Not kernel API: a driver built for the bridge (#ifdef PINFAULT_BRIDGE) can hit a fault
 * site it declared for the run (the pinfault_sites ini key, a conftest hook), as Python
 * drivers do with fake_mm.fault_point(): a negative errno when the site fires, else 0.
 */
#define PINFAULT_BRIDGE 1
extern long pinfault_fault_point(const char *site);

#endif /* PINFAULT_KAPI_H */
