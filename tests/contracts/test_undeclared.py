"""End to end (pytester): the checker judges driver code that declares nothing.

Each buggy driver below is plain driver-style Python with no ``@pin_entry_point`` and
no ``check()`` call in its test: the plugin's checker finds the driver call the test
made, judges it once it returned, and fails the test; each correct twin passes.
"""

from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]

INNER = ("-p", "no:cacheprovider", "-p", "pytest_pinfault.plugin")

HEADER = textwrap.dedent('''
    import errno
    import pytest
    from pytest_pinfault import Out
    from pytest_pinfault.mm import (FOLL_LONGTERM, FOLL_WRITE, GFP_KERNEL, MAP_ANONYMOUS,
                                    MAP_PRIVATE, PROT_READ, PROT_WRITE)

    MACHINE = pytest.mark.mm_config(ram="1GiB", cma="64MiB", movablecore="128MiB")
    NPAGES = 8

    def buffer(k, where):
        mm = k.current.mm
        addr = mm.mmap(NPAGES * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        with k.steer(where):
            assert mm.write(addr, b"payload!" * (NPAGES * 512)) == NPAGES * 4096
        return addr

    def memfd(k, where, npages=NPAGES):
        f = k.memfd_create("buf", 0)
        assert f.ftruncate(npages * 4096) == 0
        with k.steer(where):
            assert f.pwrite(b"m" * (npages * 4096), 0) == npages * 4096
        return f

    class Dev:
        """A driver object: ``k`` is the fake mm, ``pages`` what the device uses."""
        def __init__(self, k):
            self.k = k
            self.pages = []
''')


@pytest.fixture(autouse=True)
def _no_autoload(monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("PINFAULT_FAULTS", raising=False)


def run_file(pytester, body: str, *args: str):
    pytester.makepyfile(test_drv=HEADER + textwrap.dedent(body))
    return pytester.runpytest(*INNER, *args)


def test_foll_get_dma_left_in_cma_is_caught_without_declaration(pytester):
    r = run_file(pytester, '''
        def register(dev, addr):                 # FOLL_GET "DMA" reference kept: the bug
            return dev.k.get_user_pages(addr, NPAGES, FOLL_WRITE, dev.pages)

        def register_fixed(dev, addr):
            return dev.k.pin_user_pages(addr, NPAGES, FOLL_LONGTERM | FOLL_WRITE, dev.pages)

        def release(dev):
            for p in dev.pages:
                dev.k.put_page(p)

        def release_fixed(dev):
            dev.k.unpin_user_pages(dev.pages, len(dev.pages))

        @MACHINE
        def test_buggy(fake_mm):
            dev = Dev(fake_mm)
            assert register(dev, buffer(fake_mm, "cma")) == NPAGES
            release(dev)

        @MACHINE
        def test_fixed(fake_mm):
            dev = Dev(fake_mm)
            assert register_fixed(dev, buffer(fake_mm, "cma")) == NPAGES
            release_fixed(dev)
    ''')
    r.assert_outcomes(passed=1, failed=1)
    out = r.stdout.str()
    assert "test_drv.py::test_buggy" in out and "FAILED test_drv.py::test_fixed" not in out
    r.stdout.fnmatch_lines(["*[[]longterm-placement[]] 8 long-term holds sit in CMA "
                            "(taken by register (an undeclared driver call))*",
                            "*8 folios (8 pages) in zone=* mt=CMA: pfn 0x*",
                            "*call: register (called from test_drv.py:* test_buggy)*",
                            "*likely fix: a reference or pin that outlives the call is long-term*"])
    assert out.count("\npin contract violation") == 1        # one splat for the call


def test_plain_reference_on_a_cma_page_cache_folio_is_caught(pytester):
    r = run_file(pytester, '''
        def attach(dev, f):                      # udmabuf before v6.11: get_page() kept
            for i in range(NPAGES):
                folio = dev.k.filemap_get_folio(f.mapping, i)
                assert not isinstance(folio, int)
                dev.pages.append(folio)
            return 0

        def detach(dev):
            for folio in dev.pages:
                dev.k.folio_put(folio)

        def attach_fixed(dev, f):
            n = dev.k.memfd_pin_folios(f, 0, NPAGES * 4096 - 1, dev.pages, NPAGES, Out(0))
            return 0 if n == NPAGES else -errno.EFAULT

        def detach_fixed(dev):
            dev.k.unpin_folios(dev.pages, len(dev.pages))

        @MACHINE
        def test_buggy(fake_mm):
            dev = Dev(fake_mm)
            assert attach(dev, memfd(fake_mm, "cma")) == 0
            detach(dev)

        @MACHINE
        def test_fixed(fake_mm):
            dev = Dev(fake_mm)
            assert attach_fixed(dev, memfd(fake_mm, "cma")) == 0
            detach_fixed(dev)
    ''')
    r.assert_outcomes(passed=1, failed=1)
    r.stdout.fnmatch_lines(["*8 long-term holds sit in CMA (taken by attach (an undeclared driver call))*"])


def test_short_term_pin_kept_in_zone_movable_is_caught(pytester):
    r = run_file(pytester, '''
        class Ctx:
            def __init__(self, k):
                self.k, self.pages = k, []
            def map_user(self, addr):            # forgot FOLL_LONGTERM
                n = self.k.pin_user_pages(addr, NPAGES, FOLL_WRITE, self.pages)
                return n if n < 0 else 0
            def map_user_fixed(self, addr):
                n = self.k.pin_user_pages(addr, NPAGES, FOLL_LONGTERM | FOLL_WRITE, self.pages)
                return n if n < 0 else 0
            def unmap(self):
                self.k.unpin_user_pages(self.pages, len(self.pages))

        @MACHINE
        def test_buggy(fake_mm):
            ctx = Ctx(fake_mm)
            assert ctx.map_user(buffer(fake_mm, "movable")) == 0
            ctx.unmap()

        @MACHINE
        def test_fixed(fake_mm):
            ctx = Ctx(fake_mm)
            assert ctx.map_user_fixed(buffer(fake_mm, "movable")) == 0
            ctx.unmap()
    ''')
    r.assert_outcomes(passed=1, failed=1)
    r.stdout.fnmatch_lines(["*8 long-term holds sit in ZONE_MOVABLE "
                            "(taken by Ctx.map_user (an undeclared driver call))*"])


def test_stale_device_view_after_migration_is_caught_without_check(pytester):
    r = run_file(pytester, '''
        from pytest_pinfault.contracts import checker_for

        class Mirror:
            """A device page table over user memory kept coherent by an mmu notifier."""
            def __init__(self, k, mm, addr, evict=True):
                self.k, self.mm, self.addr, self.evict_on_invalidate = k, mm, addr, evict
                self.dev = {}
                self.sub = k.mmu_interval_notifier_insert(mm, addr, NPAGES * 4096, self)
                checker_for(k).declare_device_mapping(self, self.view)
            def invalidate(self, sub, rng, cur_seq):
                sub.set_seq(cur_seq)
                if self.evict_on_invalidate:
                    self.dev.clear()             # the fixed driver evicts
                return True
            def view(self):
                return [(self.mm, self.addr + i * 4096, pfn) for i, pfn in self.dev.items()]
            def fault(self):
                pages = []
                n = self.k.get_user_pages_remote(self.mm, self.addr, NPAGES, FOLL_WRITE, pages)
                self.dev = {i: p.pfn for i, p in enumerate(pages[:n])}
                for p in pages[:n]:
                    self.k.put_page(p)           # short-term: the notifier keeps it coherent
                return n
            def close(self):
                checker_for(self.k).release_device_mapping(self)
                self.k.mmu_interval_notifier_remove(self.sub)

        def run(fake_mm, evict):
            mm = fake_mm.current.mm
            m = Mirror(fake_mm, mm, buffer(fake_mm, "cma"), evict)
            assert m.fault() == NPAGES
            area = fake_mm.cma_areas[0]
            page = fake_mm.cma_alloc(area, area.count, 0)   # migrates the buffer
            assert page is not None
            assert fake_mm.cma_release(area, page, area.count)
            m.close()

        @MACHINE
        def test_buggy(fake_mm):
            run(fake_mm, evict=False)

        @MACHINE
        def test_fixed(fake_mm):
            run(fake_mm, evict=True)
    ''')
    r.assert_outcomes(passed=1, failed=1)
    r.stdout.fnmatch_lines(["*[[]coherence[]] stale page: device mapping of <test_drv.Mirror object at *> "
                            "still points at pfn=0x*, but the page table maps pfn=0x* "
                            "(a missed mmu notifier invalidation) (first: *; 8 entries)*",
                            "*likely fix: evict the device mapping in the mmu_interval_notifier "
                            "invalidate callback*"])


def test_cow_of_a_foll_get_page_is_a_stale_page_without_check(pytester):
    r = run_file(pytester, '''
        def grab(dev, addr):                     # read-only FOLL_GET, no unshare
            return dev.k.get_user_pages(addr, 1, 0, dev.pages)

        @MACHINE
        @pytest.mark.pin_contract(disable=["longterm-placement"], reason="only rule 6 here")
        def test_buggy(fake_mm):
            mm = fake_mm.current.mm
            addr = buffer(fake_mm, "normal")
            child = fake_mm.fork(mm)             # the page is now shared copy-on-write
            dev = Dev(fake_mm)
            assert grab(dev, addr) == 1
            assert mm.write(addr, b"COW") == 3   # the parent's page is copied
            for p in dev.pages:
                fake_mm.put_page(p)
    ''')
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines(["*[[]coherence[]] stale page: the held anonymous folio pfn=0x* is no longer "
                            "what the page table maps at 0x*; it now maps pfn=0x* (replaced by "
                            "copy-on-write or migration)*"])


def test_undeclared_error_path_leaking_pins_is_rule_2(pytester):
    r = run_file(pytester, '''
        def create(dev, addr):
            n = dev.k.pin_user_pages(addr, NPAGES, FOLL_LONGTERM | FOLL_WRITE, dev.pages)
            if n < 0:
                return n
            obj = dev.k.kmalloc(64, GFP_KERNEL)
            if obj is None:
                return -errno.ENOMEM             # BUG: the pins stay
            dev.obj = obj
            return 0

        @MACHINE
        @pytest.mark.pinfault("kmalloc=1*return(-ENOMEM)")
        def test_buggy(fake_mm):
            dev = Dev(fake_mm)
            ret = create(dev, buffer(fake_mm, "normal"))
            assert ret == -errno.ENOMEM
            fake_mm.unpin_user_pages(dev.pages, len(dev.pages))
    ''')
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines(["*[[]error-nothing-held[]] create (an undeclared driver call) returned -ENOMEM "
                            "but left 8 new pin(s) and 0 new reference(s) on 8 folios (8 pages)*",
                            "*injected fault(s) that fired: kmalloc#1 -ENOMEM at test_drv.py:* create*"])


def test_violation_leads_the_failure_when_the_test_assert_fails_too(pytester):
    r = run_file(pytester, '''
        def register(dev, addr):
            return dev.k.get_user_pages(addr, NPAGES, FOLL_WRITE, dev.pages)

        @MACHINE
        def test_buggy(fake_mm):
            dev = Dev(fake_mm)
            n = register(dev, buffer(fake_mm, "cma"))
            fake_mm.folio_get(fake_mm.zero_folio) if False else None
            assert n == NPAGES + 1, "the test's own expectation"
    ''')
    r.assert_outcomes(failed=1)
    out = r.stdout.str()
    first = out.index("pin contract violation: [longterm-placement]")
    assert first < out.index("The test's own check failed too:")
    r.stdout.fnmatch_lines(["*The test's own check failed too:*",
                            "test_drv.py:*: assert n == NPAGES + 1*",
                            "AssertionError: the test's own expectation*"])


def test_count_honesty_for_any_out_array_and_compact_folio_list(pytester):
    r = run_file(pytester, '''
        from pytest_pinfault import pin_entry_point

        @pin_entry_point(name="MAP")
        def map_buf(dev, addr, out):             # the out-array is not named pages/folios
            n = dev.k.pin_user_pages(addr, 64, FOLL_WRITE | FOLL_LONGTERM, out)
            return 64 if n > 0 else n            # BUG: trusts the request, not n

        @MACHINE
        def test_buggy(fake_mm):
            mm = fake_mm.current.mm
            addr = mm.mmap(32 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
            with fake_mm.steer("normal"):
                assert mm.write(addr, b"z" * (32 * 4096)) == 32 * 4096
            dev = Dev(fake_mm)
            out = []
            assert map_buf(dev, addr, out) == 64     # only 32 pages are mapped
            fake_mm.unpin_user_pages(out, 32)
    ''')
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines(["*[[]count-honesty[]] MAP returned 64 but filled only 32 entries*"])


def test_rule7_names_the_counter_and_the_missing_call(pytester):
    r = run_file(pytester, '''
        def migrate_out(dev, addr):              # open-codes isolation, never counts it in
            pages = []
            n = dev.k.get_user_pages(addr, NPAGES, FOLL_WRITE, pages)
            lst = []
            dev.k.lru_add_drain()
            for p in pages[:n]:
                if dev.k.folio_isolate_lru(p.folio):
                    lst.append(p.folio)
                dev.k.put_page(p)
            dev.k.putback_movable_pages(lst)     # subtracts what was never added
            return 0

        @MACHINE
        def test_buggy(fake_mm):
            assert migrate_out(Dev(fake_mm), buffer(fake_mm, "normal")) == 0
            assert fake_mm.stats.nr_isolated_anon == -NPAGES
    ''')
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines(["*[[]isolation-hygiene[]] NR_ISOLATED not back to baseline: "
                            "nr_isolated_anon=-8 (baseline 0, -8 pages)*",
                            "*likely fix: *node_stat_mod_isolated*"])


def test_coherence_names_a_wrong_offset(pytester):
    r = run_file(pytester, '''
        from pytest_pinfault.contracts import checker_for

        @MACHINE
        def test_buggy(fake_mm):
            mm = fake_mm.current.mm
            addr = mm.mmap(2 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
            fake_mm.current.mm.madvise(addr, 2 << 20, 14) if hasattr(mm, "madvise") else None
            assert mm.write(addr, b"t" * (2 << 20)) == 2 << 20
            folio, idx = mm.lookup(addr + 4096)
            if folio.order == 0:
                pytest.skip("no THP here")
            view = [(mm, addr + 4096, folio.pfn)]       # BUG: the folio's head, not page 1
            ck = checker_for(fake_mm)
            ck.declare_device_mapping("dev", lambda: view)
            found = fake_mm.check()
            ck.release_device_mapping("dev")
            assert found and "off within the right folio" in found[0].message
    ''')
    out = r.stdout.str()
    if "no THP here" in out:
        pytest.skip("no THP in the default machine")
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines(["*[[]coherence[]] device mapping of 'dev' is off within the right folio*"])
