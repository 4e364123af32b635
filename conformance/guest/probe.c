/*
 * pytest-pinfault conformance probe: runs as root inside a QEMU guest and prints the
 * observable outcomes of long-term pins, plain references, offlining, CMA allocation
 * and udmabuf as "PF ..." lines on stdout (the serial console).  The protocol and the
 * scenarios are specified in docs/conformance.md; the host side parses them with
 * pytest_pinfault.conformance.parse_console.
 *
 * Built with `gcc -static`; needs /proc, /sys and /sys/kernel/debug mounted (the init
 * script does that).  Every blocking step is bounded: offlining runs under a repeating
 * ITIMER_REAL without SA_RESTART, so a kernel that retries forever returns EINTR.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>
#include <linux/io_uring.h>
#include <linux/memfd.h>
#include <linux/udmabuf.h>

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

#define PAGE 4096UL
#define NPAGES 64          /* a buffer of 4 KiB pages */
#define THP_PAGES 512       /* a buffer of one PMD-mapped THP */
#define MAX_ZONES 8
#define MAX_SOAK 8192

/* mm/gup_test.h (not uapi) */
struct gup_test {
	uint64_t get_delta_usec, put_delta_usec, addr, size;
	uint32_t nr_pages_per_call, gup_flags, test_flags;
	uint32_t which_pages[8];
};
#define PIN_LONGTERM_BENCHMARK _IOWR('g', 3, struct gup_test)
#define PIN_BASIC_TEST _IOWR('g', 5, struct gup_test)
#define FOLL_WRITE 0x01
struct pin_longterm_test { uint64_t addr, size; uint32_t flags; };   /* v6.2+ */
#define PIN_LONGTERM_TEST_START _IOW('g', 7, struct pin_longterm_test)
#define PIN_LONGTERM_TEST_STOP _IO('g', 8)
#define PIN_LONGTERM_TEST_FLAG_USE_WRITE 1

/* ------------------------------------------------------------------ output */

static const char *ename(int e)
{
	switch (e) {
	case 0: return "ok";
	case EINTR: return "EINTR";
	case EBUSY: return "EBUSY";
	case EINVAL: return "EINVAL";
	case ENOMEM: return "ENOMEM";
	case EBADFD: return "EBADFD";
	case EBADF: return "EBADF";
	case EFAULT: return "EFAULT";
	case EAGAIN: return "EAGAIN";
	case EPERM: return "EPERM";
	case EOPNOTSUPP: return "EOPNOTSUPP";
	case ENOENT: return "ENOENT";
	case ENOTTY: return "ENOTTY";
	case ENOSPC: return "ENOSPC";
	case EIO: return "EIO";
	case ENODEV: return "ENODEV";
	case EFBIG: return "EFBIG";
	case ENXIO: return "ENXIO";
	default: {
		static char buf[16];
		snprintf(buf, sizeof(buf), "E%d", e);
		return buf;
	}
	}
}

static void say(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("PF ", stdout);
	vprintf(fmt, ap);
	fputc('\n', stdout);
	fflush(stdout);
	va_end(ap);
}

static void note(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("probe: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* ------------------------------------------------------------------ layout */

struct zone_span { char name[32]; unsigned long start, spanned, present; };
static struct zone_span zones[MAX_ZONES];
static int nr_zones;
static unsigned long cma_base, cma_count, block_pages;
static char cma_name[NAME_MAX + 1];
static unsigned long movable_start, movable_end;   /* pfns [start, end) */
static int good_block[64];                          /* by block id: passed baseline */

static unsigned long read_ulong_file(const char *path, int base)
{
	char buf[64] = {0};
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	if (read(fd, buf, sizeof(buf) - 1) < 0)
		buf[0] = 0;
	close(fd);
	return strtoul(buf, NULL, base);
}

static void read_layout(void)
{
	FILE *f = fopen("/proc/zoneinfo", "r");
	char line[256], name[32];
	unsigned long v;
	struct zone_span *z = NULL;

	while (f && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "Node %*d, zone %31s", name) == 1) {
			z = nr_zones < MAX_ZONES ? &zones[nr_zones++] : NULL;
			if (z)
				snprintf(z->name, sizeof(z->name), "%s", name);
		} else if (z && sscanf(line, " spanned %lu", &v) == 1) {
			z->spanned = v;
		} else if (z && sscanf(line, " present %lu", &v) == 1) {
			z->present = v;
		} else if (z && sscanf(line, " start_pfn: %lu", &v) == 1) {
			z->start = v;
		}
	}
	if (f)
		fclose(f);
	for (int i = 0; i < nr_zones; i++) {
		if (!zones[i].spanned)
			continue;
		say("layout zone=%s start_pfn=%lu spanned=%lu present=%lu", zones[i].name,
		    zones[i].start, zones[i].spanned, zones[i].present);
		if (!strcmp(zones[i].name, "Movable")) {
			movable_start = zones[i].start;
			movable_end = zones[i].start + zones[i].spanned;
		}
	}

	DIR *d = opendir("/sys/kernel/debug/cma");
	struct dirent *de;
	while (d && (de = readdir(d))) {
		char path[512];
		if (de->d_name[0] == '.')
			continue;
		snprintf(cma_name, sizeof(cma_name), "%s", de->d_name);
		snprintf(path, sizeof(path), "/sys/kernel/debug/cma/%s/base_pfn", cma_name);
		cma_base = read_ulong_file(path, 10);
		snprintf(path, sizeof(path), "/sys/kernel/debug/cma/%s/count", cma_name);
		cma_count = read_ulong_file(path, 10);
		say("layout cma=%s base_pfn=%lu count=%lu", cma_name, cma_base, cma_count);
		break;
	}
	if (d)
		closedir(d);
	block_pages = read_ulong_file("/sys/devices/system/memory/block_size_bytes", 16) / PAGE;
	say("layout block_pages=%lu", block_pages);
}

/* ------------------------------------------------------------------ offline / CMA */

static volatile sig_atomic_t ticks;
static void on_alarm(int sig) { (void)sig; ticks++; }

static void arm_timer(long on)
{
	/* long enough for any offline that can succeed under TCG, short enough to keep a
	 * retry-forever loop bounded */
	struct itimerval it = {{on, 0}, {on, 0}};
	setitimer(ITIMER_REAL, &it, NULL);
}

static int write_file(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY), ret = 0;
	if (fd < 0)
		return errno;
	if (write(fd, val, strlen(val)) < 0)
		ret = errno;
	close(fd);
	return ret;
}

/* Offline memory block `id`, bounded by the interval timer; online it again (movable)
 * if that worked.  Returns 0 or the errno of the write. */
static int offline_block(unsigned long id)
{
	char path[128];
	int ret;
	snprintf(path, sizeof(path), "/sys/devices/system/memory/memory%lu/state", id);
	arm_timer(5);
	ret = write_file(path, "offline");
	arm_timer(0);
	if (ret == EINTR) {
		/* a slow (host-starved) TCG guest must not pass for a stuck one: try once
		 * more with three times the patience before reporting EINTR */
		arm_timer(15);
		ret = write_file(path, "offline");
		arm_timer(0);
	}
	if (ret == 0) {
		int back = write_file(path, "online_movable");
		if (back)
			note("online_movable memory%lu: %s", id, ename(back));
	}
	return ret;
}

/* cma_alloc() of the whole area through debugfs; freed again on success. */
static int cma_alloc_all(void)
{
	char path[512], val[32];
	int ret;
	if (!cma_count)
		return ENODEV;
	snprintf(path, sizeof(path), "/sys/kernel/debug/cma/%s/alloc", cma_name);
	snprintf(val, sizeof(val), "%lu", cma_count);
	arm_timer(5);
	ret = write_file(path, val);
	arm_timer(0);
	if (ret == 0) {
		snprintf(path, sizeof(path), "/sys/kernel/debug/cma/%s/free", cma_name);
		int back = write_file(path, val);
		if (back)
			note("cma free: %s", ename(back));
	}
	return ret;
}

static void baseline(void)
{
	if (!movable_end || !block_pages)
		return;
	for (unsigned long pfn = movable_start; pfn + block_pages <= movable_end; pfn += block_pages) {
		unsigned long id = pfn / block_pages;
		int ret = offline_block(id);
		if (id < 64)
			good_block[id] = ret == 0;
		say("baseline block=%lu first_pfn=%lu offline=%s", id, pfn, ename(ret));
	}
}

/* ------------------------------------------------------------------ pages */

static int pagemap_fd = -1, kpageflags_fd = -1;
#define KPF_THP 22

/* Every pfn is part of a transparent huge page (/proc/kpageflags). */
static int all_thp(const unsigned long *pfn, size_t n)
{
	uint64_t f;
	for (size_t i = 0; i < n; i++)
		if (pread(kpageflags_fd, &f, 8, (off_t)(pfn[i] * 8)) != 8 || !(f & (1ULL << KPF_THP)))
			return 0;
	return 1;
}

static int pfns_of(void *addr, size_t n, unsigned long *pfn)
{
	uint64_t e;
	for (size_t i = 0; i < n; i++) {
		off_t off = ((uintptr_t)addr / PAGE + i) * 8;
		if (pread(pagemap_fd, &e, 8, off) != 8)
			return -1;
		if (!(e & (1ULL << 63)))
			return -1;
		pfn[i] = e & ((1ULL << 55) - 1);
		if (!pfn[i])
			return -1;
	}
	return 0;
}

enum where { W_MOVABLE, W_CMA };
static const char *where_name[] = {"movable", "cma"};
enum mem { M_ANON, M_SHMEM, M_THP };
static const char *mem_name[] = {"anon", "shmem", "thp"};

/* All of pfn[] in one good ZONE_MOVABLE block (returns its id) or in the CMA area. */
static long placed(enum where w, const unsigned long *pfn, size_t n)
{
	if (w == W_CMA) {
		for (size_t i = 0; i < n; i++)
			if (pfn[i] < cma_base || pfn[i] >= cma_base + cma_count)
				return -1;
		return 0;
	}
	unsigned long id = pfn[0] / block_pages;
	if (id >= 64 || !good_block[id])
		return -1;
	for (size_t i = 0; i < n; i++)
		if (pfn[i] < movable_start || pfn[i] >= movable_end || pfn[i] / block_pages != id)
			return -1;
	return (long)id;
}

struct buf {
	enum mem mem;
	char *addr;
	int memfd;               /* shmem: the backing memfd */
	long block;              /* movable: the block holding it */
	size_t n;                /* pages */
	unsigned long pfn[THP_PAGES];
};

struct soak { void *addr; size_t len; int fd, fd2; };
static struct soak soaks[MAX_SOAK];
static int nr_soaks;

static void soak_release(void)
{
	for (int i = 0; i < nr_soaks; i++) {
		if (soaks[i].addr)
			munmap(soaks[i].addr, soaks[i].len);
		if (soaks[i].fd >= 0)
			close(soaks[i].fd);
		if (soaks[i].fd2 >= 0)
			close(soaks[i].fd2);
	}
	nr_soaks = 0;
}

static int new_buffer(struct buf *b, enum mem m, unsigned int seals)
{
	size_t len = (m == M_THP ? THP_PAGES : NPAGES) * PAGE;
	b->mem = m;
	b->memfd = -1;
	b->n = len / PAGE;
	if (m == M_THP) {
		/* 2 MiB aligned, MADV_HUGEPAGE: the first touch maps one THP */
		char *raw = mmap(NULL, 2 * len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (raw == MAP_FAILED)
			return errno;
		b->addr = (char *)(((uintptr_t)raw + len - 1) & ~(uintptr_t)(len - 1));
		if (b->addr > raw)
			munmap(raw, (size_t)(b->addr - raw));
		munmap(b->addr + len, (size_t)(raw + 2 * len - (b->addr + len)));
		madvise(b->addr, len, MADV_HUGEPAGE);
	} else if (m == M_ANON) {
		b->addr = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (b->addr == MAP_FAILED)
			return errno;
		madvise(b->addr, len, MADV_NOHUGEPAGE);
	} else {
		b->memfd = memfd_create("pf", MFD_ALLOW_SEALING);
		if (b->memfd < 0 || ftruncate(b->memfd, len))
			return errno;
		b->addr = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, b->memfd, 0);
		if (b->addr == MAP_FAILED)
			return errno;
		if (seals)
			fcntl(b->memfd, F_ADD_SEALS, seals);
	}
	for (size_t i = 0; i < b->n; i++)
		memset(b->addr + i * PAGE, (int)(0x5a ^ i), PAGE);
	return 0;
}

static void free_buffer(struct buf *b)
{
	munmap(b->addr, b->n * PAGE);
	if (b->memfd >= 0)
		close(b->memfd);
	b->memfd = -1;
}

static int soak_more(enum where w)
{
	/* Big anonymous THP chunks first (cheap to fault), then plain pages. */
	size_t len = 8UL << 20;
	void *p;
	if (nr_soaks >= MAX_SOAK)
		return -1;
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	madvise(p, len, MADV_HUGEPAGE);
	for (size_t off = 0; off < len; off += PAGE)
		((volatile char *)p)[off] = 1;
	soaks[nr_soaks++] = (struct soak){p, len, -1, -1};
	return 0;
}

/* "pages free", "nr_free_cma" and the high watermark of zone `name` from
 * /proc/zoneinfo, in pages. */
static void zone_free_high(const char *name, unsigned long *free, unsigned long *cma,
			   unsigned long *high)
{
	FILE *f = fopen("/proc/zoneinfo", "r");
	char line[256], zname[32];
	unsigned long v;
	int in = 0;
	*free = *cma = *high = 0;
	while (f && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "Node %*d, zone %31s", zname) == 1)
			in = !strcmp(zname, name);
		else if (in && sscanf(line, " pages free %lu", &v) == 1)
			*free = v;
		else if (in && sscanf(line, " nr_free_cma %lu", &v) == 1)
			*cma = v;
		else if (in && sscanf(line, " high %lu", &v) == 1)
			*high = v;
	}
	if (f)
		fclose(f);
}

static void zone_free(const char *name, unsigned long *free, unsigned long *cma)
{
	unsigned long high;
	zone_free_high(name, free, cma, &high);
}

/* Fill Normal and the non-CMA part of DMA32 with pipe buffers: GFP_HIGHUSER pages, which
 * never come from CMA or ZONE_MOVABLE.  Afterwards a movable allocation that finds
 * ZONE_MOVABLE empty is served from CMA (the allocator prefers CMA once its free pages
 * exceed half of the zone's).  Stops 8 MiB above each zone's high watermark (which for
 * these allocations counts only non-CMA pages), so nothing is OOM-killed. */
static void pipe_soak(void)
{
	static char chunk[1 << 20];
	const unsigned long margin = (8UL << 20) / PAGE + 256;
	unsigned long free, cma, high, nfree, ncma, nhigh;
	int ret;
	/* With THP enabled, khugepaged raises min_free_kbytes (again after every online) so
	 * far that DMA32's min watermark (~100 MiB) nears the CMA area's size; take back the
	 * usual small reserve so that non-CMA memory can be drained below CMA's. */
	if ((ret = write_file("/proc/sys/vm/min_free_kbytes", "16384")))
		note("min_free_kbytes: %s", ename(ret));
	memset(chunk, 0xa5, sizeof(chunk));
	for (;;) {
		int p[2];
		zone_free_high("DMA32", &free, &cma, &high);
		zone_free_high("Normal", &nfree, &ncma, &nhigh);
		if (nr_soaks % 256 == 0)
			note("pipe soak: %d pipes, DMA32 free %lu cma %lu, Normal free %lu", nr_soaks, free, cma, nfree);
		if (free - cma < high + margin && nfree < nhigh + margin)
			break;
		if (nr_soaks >= MAX_SOAK || pipe2(p, O_NONBLOCK))   /* a full pipe ends the soak */
			break;
		fcntl(p[1], F_SETPIPE_SZ, (int)sizeof(chunk));
		soaks[nr_soaks++] = (struct soak){NULL, 0, p[0], p[1]};
		if (write(p[1], chunk, sizeof(chunk)) != (ssize_t)sizeof(chunk))
			break;
	}
}

static int mem_free_kb(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[128];
	int kb = -1;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "MemFree: %d kB", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb;
}

/* Allocate a buffer whose pages all lie in `w`, soaking up memory as needed; the soak
 * is released before returning.  0 on success. */
static int place_buffer(struct buf *b, enum where w, enum mem m, unsigned int seals)
{
	for (int tries = 0; tries < 4000; tries++) {
		int ret = new_buffer(b, m, seals);
		if (ret)
			return ret;
		if (pfns_of(b->addr, b->n, b->pfn) == 0 && (b->block = placed(w, b->pfn, b->n)) >= 0 &&
		    (m != M_THP || all_thp(b->pfn, b->n))) {
			soak_release();
			return 0;
		}
		/* keep the misplaced buffer as soak, and take more memory when that is not
		 * enough (the allocator only turns to CMA once the zone is nearly empty) */
		if (nr_soaks < MAX_SOAK)
			soaks[nr_soaks++] = (struct soak){b->addr, b->n * PAGE, b->memfd, -1};
		else
			free_buffer(b);
		if (w == W_CMA) {
			unsigned long mfree, mcma;
			zone_free("Movable", &mfree, &mcma);
			if (tries == 0)
				pipe_soak();
			else if (mfree > (8UL << 20) / PAGE && soak_more(w))
				break;
		} else if (tries % 4 == 3 && mem_free_kb() > 64 * 1024 && soak_more(w)) {
			break;
		}
	}
	soak_release();
	return -1;
}

static const char *moved(const struct buf *b)
{
	unsigned long now[THP_PAGES];
	size_t changed = 0;
	if (pfns_of(b->addr, b->n, now))
		return "unmapped";
	for (size_t i = 0; i < b->n; i++)
		changed += now[i] != b->pfn[i];
	return changed == b->n ? "all" : changed ? "some" : "none";
}

/* After the pin: is the THP still one huge page, or was it split? */
static const char *large(const struct buf *b)
{
	unsigned long now[THP_PAGES];
	if (pfns_of(b->addr, b->n, now))
		return "unmapped";
	return all_thp(now, b->n) ? "kept" : "split";
}

static const char *intact(const struct buf *b)
{
	for (size_t i = 0; i < b->n; i++)
		for (size_t j = 0; j < PAGE; j++)
			if ((unsigned char)b->addr[i * PAGE + j] != (unsigned char)(0x5a ^ i))
				return "corrupt";
	return "intact";
}

static int region_test(const struct buf *b, enum where w)
{
	return w == W_CMA ? cma_alloc_all() : offline_block((unsigned long)b->block);
}

/* ------------------------------------------------------------------ holders */

struct holder {
	int kind;        /* 0 io_uring, 1 pipe, 2 dma-buf fd, 3 gup_test */
	int fd, fd2;
};

static int iouring_hold(struct buf *b, struct holder *h)
{
	struct io_uring_params p;
	struct iovec iov = {b->addr, b->n * PAGE};
	memset(&p, 0, sizeof(p));
	h->kind = 0;
	h->fd = (int)syscall(__NR_io_uring_setup, 4, &p);
	if (h->fd < 0)
		return errno;
	if (syscall(__NR_io_uring_register, h->fd, IORING_REGISTER_BUFFERS, &iov, 1) < 0) {
		int e = errno;
		close(h->fd);
		return e;
	}
	return 0;
}

static int vmsplice_hold(struct buf *b, struct holder *h)
{
	int p[2];
	struct iovec iov = {b->addr, b->n * PAGE};
	h->kind = 1;
	if (pipe(p))
		return errno;
	fcntl(p[1], F_SETPIPE_SZ, (int)(b->n * PAGE * 2));
	h->fd = p[0];
	h->fd2 = p[1];
	ssize_t n = vmsplice(p[1], &iov, 1, SPLICE_F_NONBLOCK);   /* never block on a full pipe */
	if (n != (ssize_t)(b->n * PAGE)) {
		int e = n < 0 ? errno : EAGAIN;
		close(p[0]);
		close(p[1]);
		return e;
	}
	return 0;
}

/* gup_test PIN_LONGTERM_TEST_START (v6.2+): FOLL_LONGTERM | FOLL_WRITE pins held by the
 * gup_test file until PIN_LONGTERM_TEST_STOP. */
static int gup_test_hold(struct buf *b, struct holder *h)
{
	struct pin_longterm_test t = {(uintptr_t)b->addr, b->n * PAGE, PIN_LONGTERM_TEST_FLAG_USE_WRITE};
	h->kind = 3;
	h->fd = open("/sys/kernel/debug/gup_test", O_RDWR);
	if (h->fd < 0)
		return -ENOENT;
	if (ioctl(h->fd, PIN_LONGTERM_TEST_START, &t)) {
		int e = errno;
		close(h->fd);
		return e == EINVAL || e == ENOTTY ? -ENOTTY : e;
	}
	return 0;
}

static void release(struct holder *h)
{
	if (h->kind == 3)
		ioctl(h->fd, PIN_LONGTERM_TEST_STOP);
	if (h->kind == 0)
		syscall(__NR_io_uring_register, h->fd, IORING_UNREGISTER_BUFFERS, NULL, 0);
	close(h->fd);
	if (h->kind == 1)
		close(h->fd2);
}

static int gup_test_run(struct buf *b, unsigned long cmd)
{
	struct gup_test g;
	int fd = open("/sys/kernel/debug/gup_test", O_RDWR), ret = 0;
	if (fd < 0)
		return -ENOENT;
	memset(&g, 0, sizeof(g));
	g.addr = (uintptr_t)b->addr;
	g.size = b->n * PAGE;
	g.nr_pages_per_call = (uint32_t)b->n;
	g.gup_flags = FOLL_WRITE;
	if (ioctl(fd, cmd, &g))
		ret = errno;
	else if (g.size != b->n * PAGE)
		ret = -1;                       /* short: the ioctl hides pin_user_pages' errno */
	close(fd);
	return ret;
}

/* ------------------------------------------------------------------ udmabuf */

static int udmabuf_create(int memfd, uint64_t offset, uint64_t size)
{
	struct udmabuf_create c = {.memfd = (uint32_t)memfd, .flags = UDMABUF_FLAGS_CLOEXEC,
				   .offset = offset, .size = size};
	int dev = open("/dev/udmabuf", O_RDWR);
	if (dev < 0)
		return -1000 - errno;
	int fd = ioctl(dev, UDMABUF_CREATE, &c);
	int e = errno;
	close(dev);
	return fd >= 0 ? fd : -e;
}

/* ------------------------------------------------------------------ scenarios */

enum mech { K_IOURING, K_GUP_LONGTERM, K_GUP_PIN, K_VMSPLICE, K_GUP_HELD, K_UDMABUF };
static const char *mech_name[] = {"iouring", "gup-longterm", "gup-pin", "vmsplice",
				  "gup-longterm-held", "udmabuf"};

static void pin_scenario(enum mech k, enum mem m, enum where w)
{
	char id[96];
	struct buf b;
	struct holder h = {0};
	const char *rname = w == W_CMA ? "cma" : "offline";
	int ret;

	if (k == K_UDMABUF)
		snprintf(id, sizeof(id), "udmabuf/%s", where_name[w]);
	else
		snprintf(id, sizeof(id), "pin/%s/%s/%s", mech_name[k], mem_name[m], where_name[w]);
	if (w == W_CMA && !cma_count) {
		say("scenario id=%s pin=skip:no-cma", id);
		return;
	}
	if (place_buffer(&b, w, m, k == K_UDMABUF ? F_SEAL_SHRINK : 0)) {
		say("scenario id=%s pin=skip:placement", id);
		return;
	}
	switch (k) {
	case K_IOURING:
		ret = iouring_hold(&b, &h);
		break;
	case K_VMSPLICE:
		ret = vmsplice_hold(&b, &h);
		break;
	case K_GUP_HELD:
		ret = gup_test_hold(&b, &h);
		if (ret < 0) {
			free_buffer(&b);
			say("scenario id=%s pin=skip:%s", id, ret == -ENOENT ? "no-gup_test" : "no-PIN_LONGTERM_TEST");
			return;
		}
		break;
	case K_UDMABUF:
		ret = udmabuf_create(b.memfd, 0, b.n * PAGE);
		if (ret <= -1000) {
			free_buffer(&b);
			say("scenario id=%s pin=skip:no-udmabuf", id);
			return;
		}
		h.kind = 2;
		h.fd = ret;
		ret = ret < 0 ? -ret : 0;
		break;
	default:
		ret = gup_test_run(&b, k == K_GUP_LONGTERM ? PIN_LONGTERM_BENCHMARK : PIN_BASIC_TEST);
		if (ret == -ENOENT) {
			free_buffer(&b);
			say("scenario id=%s pin=skip:no-gup_test", id);
			return;
		}
		break;
	}
	if (k == K_GUP_LONGTERM || k == K_GUP_PIN || ret) {
		say("scenario id=%s pin=%s moved=%s data=%s", id, ret == -1 ? "short" : ename(ret),
		    moved(&b), intact(&b));
		if (!ret && k != K_GUP_LONGTERM && k != K_GUP_PIN)
			release(&h);
		free_buffer(&b);
		return;
	}
	const char *mv = moved(&b);       /* migration moves the PTEs: pagemap sees new pfns */
	const char *dt = intact(&b);
	char lg[32] = "";
	if (m == M_THP)
		snprintf(lg, sizeof(lg), " large=%s", large(&b));
	int held = region_test(&b, w);
	release(&h);
	int released = region_test(&b, w);

	say("scenario id=%s pin=ok moved=%s data=%s%s %s_held=%s %s_released=%s", id, mv, dt, lg,
	    rname, ename(held), rname, ename(released));
	free_buffer(&b);
}

static void udmabuf_errno(const char *name, int memfd, uint64_t off, uint64_t size)
{
	int fd = udmabuf_create(memfd, off, size);
	if (fd <= -1000) {
		say("scenario id=udmabuf-errno/%s ret=skip:no-udmabuf", name);
		return;
	}
	say("scenario id=udmabuf-errno/%s ret=%s", name, fd >= 0 ? "ok" : ename(-fd));
	if (fd >= 0)
		close(fd);
}

static int sealed_memfd(unsigned int flags, unsigned int seals, size_t len)
{
	int fd = memfd_create("pf-errno", flags);
	if (fd < 0 || ftruncate(fd, (off_t)len))
		return -1;
	if (seals && fcntl(fd, F_ADD_SEALS, seals))
		note("F_ADD_SEALS %#x: %s", seals, ename(errno));
	return fd;
}

static void udmabuf_matrix(void)
{
	size_t len = 16 * PAGE;
	int fd, p[2];

	fd = sealed_memfd(MFD_ALLOW_SEALING, F_SEAL_SHRINK, len);
	udmabuf_errno("ok", fd, 0, len);
	udmabuf_errno("unaligned-offset", fd, 1, len - PAGE);
	udmabuf_errno("unaligned-size", fd, 0, PAGE + 1);
	udmabuf_errno("size-zero", fd, 0, 0);
	udmabuf_errno("beyond-eof", fd, len, PAGE);
	udmabuf_errno("straddle-eof", fd, len - PAGE, 2 * PAGE);
	close(fd);
	fd = sealed_memfd(MFD_ALLOW_SEALING, 0, len);
	udmabuf_errno("no-seals", fd, 0, len);
	close(fd);
	fd = sealed_memfd(MFD_ALLOW_SEALING, F_SEAL_GROW, len);
	udmabuf_errno("seal-grow", fd, 0, len);
	close(fd);
	fd = sealed_memfd(MFD_ALLOW_SEALING, F_SEAL_SHRINK | F_SEAL_WRITE, len);
	udmabuf_errno("seal-write", fd, 0, len);
	close(fd);
	fd = sealed_memfd(MFD_ALLOW_SEALING, F_SEAL_SHRINK | F_SEAL_FUTURE_WRITE, len);
	udmabuf_errno("seal-future-write", fd, 0, len);
	close(fd);
	fd = sealed_memfd(0, 0, len);
	udmabuf_errno("no-allow-sealing", fd, 0, len);
	close(fd);
	fd = sealed_memfd(MFD_ALLOW_SEALING, F_SEAL_SHRINK, 65UL << 20);
	udmabuf_errno("over-size-limit", fd, 0, 65UL << 20);
	close(fd);
	if (pipe(p) == 0) {
		udmabuf_errno("pipe", p[0], 0, len);
		close(p[0]);
		close(p[1]);
	}
	fd = open("/dev/null", O_RDWR);
	udmabuf_errno("dev-null", fd, 0, len);
	close(fd);
	udmabuf_errno("bad-fd", 999, 0, len);
}

int main(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm;            /* no SA_RESTART: a looping offline gets EINTR */
	sigaction(SIGALRM, &sa, NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);
	struct rlimit nofile = {65536, 65536};   /* the pipe soak holds thousands of pipes */
	if (setrlimit(RLIMIT_NOFILE, &nofile))
		note("RLIMIT_NOFILE: %s", ename(errno));

	kpageflags_fd = open("/proc/kpageflags", O_RDONLY);
	pagemap_fd = open("/proc/self/pagemap", O_RDONLY);
	if (pagemap_fd < 0) {
		note("no pagemap: %s", ename(errno));
		return 1;
	}
	read_layout();
	baseline();
	for (int w = W_MOVABLE; w <= W_CMA; w++) {
		for (int m = M_ANON; m <= M_SHMEM; m++)
			for (int k = K_IOURING; k <= K_GUP_HELD; k++)
				pin_scenario(k, m, w);
		pin_scenario(K_IOURING, M_THP, w);
		pin_scenario(K_VMSPLICE, M_THP, w);
		pin_scenario(K_UDMABUF, M_SHMEM, w);
	}
	udmabuf_matrix();
	say("done");
	return 0;
}
