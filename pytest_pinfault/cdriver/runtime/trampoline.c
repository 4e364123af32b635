/*
 * pytest-pinfault C-driver bridge: the libc half of the runtime.
 *
 * pf_call() runs one driver function (an entry point, module_init, a dma-buf op) with
 * fault handlers installed: a NULL or ERR_PTR dereference, a bus error, an illegal
 * instruction or BUG() in driver code jumps back here (siglongjmp) instead of killing
 * the process, with the faulting address, the program counter and a frame-pointer
 * backtrace recorded for the loader to turn into the driver's file:line.  The previous
 * handlers (pytest's faulthandler) are restored when the outermost call returns.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include "pf_ops.h"

#define PF_MAX_FRAMES 16

struct pf_crash {
	int sig;
	int code;
	unsigned long addr;
	unsigned long pc;
	unsigned long sp;
	int nframes;
	unsigned long frames[PF_MAX_FRAMES];
	const char *bug_file;
	int bug_line;
	const char *bug_cond;
};

struct pf_crash pf_crash;
static sigjmp_buf *pf_jmp;
static int pf_depth;
static struct sigaction pf_old[4];
static const int pf_sigs[4] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL };
static char pf_altstack[65536];

static void pf_handler(int sig, siginfo_t *si, void *uctx)
{
	ucontext_t *uc = uctx;
	unsigned long fp = 0;
	int n = 0;

	if (!pf_jmp) {
		/* not inside a driver call: behave as if we were never here */
		sigaction(sig, &pf_old[0], NULL);
		raise(sig);
		return;
	}
	pf_crash.sig = sig;
	pf_crash.code = si->si_code;
	pf_crash.addr = (unsigned long)si->si_addr;
#if defined(__x86_64__)
	pf_crash.pc = uc->uc_mcontext.gregs[REG_RIP];
	pf_crash.sp = uc->uc_mcontext.gregs[REG_RSP];
	fp = uc->uc_mcontext.gregs[REG_RBP];
#elif defined(__aarch64__)
	pf_crash.pc = uc->uc_mcontext.pc;
	pf_crash.sp = uc->uc_mcontext.sp;
	fp = uc->uc_mcontext.regs[29];
#endif
	/* walk the frame-pointer chain (the driver is built with -fno-omit-frame-pointer);
	 * stop at the first frame that does not look like a stack frame */
	while (fp && n < PF_MAX_FRAMES && !(fp & 7)) {
		unsigned long *f = (unsigned long *)fp;
		unsigned long next = f[0], ret = f[1];
		Dl_info info;

		if (!ret || !dladdr((void *)ret, &info) || !dladdr((void *)pf_handler, &info))
			break;
		pf_crash.frames[n++] = ret;
		if (next <= fp || next - fp > (1UL << 20))
			break;
		fp = next;
	}
	pf_crash.nframes = n;
	siglongjmp(*pf_jmp, sig);
}

void pf_unwind(int code)
{
	if (!pf_jmp)
		abort();
	siglongjmp(*pf_jmp, code);
}

void pf_set_bug(const char *file, int line, const char *cond)
{
	memset(&pf_crash, 0, sizeof(pf_crash));
	pf_crash.bug_file = file;
	pf_crash.bug_line = line;
	pf_crash.bug_cond = cond;
	pf_crash.pc = (unsigned long)__builtin_return_address(0);
}

typedef long (*pf_fn4)(unsigned long, unsigned long, unsigned long, unsigned long);

/* Run fn(a0..a3); returns 0 and stores the result, or the signal number / PF_UNWIND_*
 * code when the call did not return normally. */
int pf_call(void *fn, unsigned long a0, unsigned long a1, unsigned long a2, unsigned long a3, long *ret)
{
	sigjmp_buf env;
	sigjmp_buf *volatile prev = pf_jmp;
	volatile int code;
	int i;

	if (pf_depth++ == 0) {
		struct sigaction sa;
		stack_t ss;

		ss.ss_sp = pf_altstack;
		ss.ss_size = sizeof(pf_altstack);
		ss.ss_flags = 0;
		sigaltstack(&ss, NULL);
		memset(&sa, 0, sizeof(sa));
		sa.sa_sigaction = pf_handler;
		sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
		sigemptyset(&sa.sa_mask);
		for (i = 0; i < 4; i++)
			sigaction(pf_sigs[i], &sa, &pf_old[i]);
	}
	code = sigsetjmp(env, 1);
	if (code == 0) {
		pf_jmp = &env;
		*ret = ((pf_fn4)fn)(a0, a1, a2, a3);
	}
	pf_jmp = prev;
	if (--pf_depth == 0)
		for (i = 0; i < 4; i++)
			sigaction(pf_sigs[i], &pf_old[i], NULL);
	return code;
}

/* the base address the driver object is loaded at (addr2line wants offsets) */
unsigned long pf_load_base(void)
{
	Dl_info info;

	if (!dladdr((void *)pf_call, &info))
		return 0;
	return (unsigned long)info.dli_fbase;
}

/* gcc line coverage of the driver (built with --coverage): write the counters out
 * (under $GCOV_PREFIX) and zero them, so each test's lines are its own. */
#ifdef PF_COVERAGE
extern void __gcov_dump(void);
extern void __gcov_reset(void);
int pf_coverage(int dump)
{
	if (dump)
		__gcov_dump();
	__gcov_reset();
	return 1;
}
#else
int pf_coverage(int dump)
{
	(void)dump;
	return 0;
}
#endif

void *pf_raw_alloc(unsigned long size, int zero)
{
	return zero ? calloc(1, size ? size : 1) : malloc(size ? size : 1);
}

void pf_raw_free(void *p) { free(p); }

int pf_vsnprintf(char *buf, unsigned long size, const char *fmt, __builtin_va_list ap)
{
	return vsnprintf(buf, size, fmt, ap);
}

long strscpy(char *dst, const char *src, unsigned long count)
{
	unsigned long n;

	if (!count)
		return -7;   /* -E2BIG */
	n = strnlen(src, count);
	if (n == count) {
		memcpy(dst, src, count - 1);
		dst[count - 1] = 0;
		return -7;
	}
	memcpy(dst, src, n + 1);
	return n;
}
