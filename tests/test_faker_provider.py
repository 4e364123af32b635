"""The Faker provider (pytest_pinfault.faker_provider) and the pinfault_faker fixture."""

from __future__ import annotations

import importlib
import re

import pytest

faker = pytest.importorskip("faker")

from pytest_pinfault import FakeMM, MMConfig  # noqa: E402
from pytest_pinfault.faker_provider import WORKLOAD_OPS, MachineProvider, replay  # noqa: E402
from pytest_pinfault.faults.sites import BUILTIN_SITES  # noqa: E402
from pytest_pinfault.mm import ConfigError  # noqa: E402
from pytest_pinfault.mm.config import KERNELS, QUIRK_KERNELS  # noqa: E402
from pytest_pinfault.mm.memblock import compute_layout  # noqa: E402

pytest_plugins = ["pytester"]

MiB, GiB = 1 << 20, 1 << 30
SEEDS = range(400)


@pytest.fixture(scope="module")
def fake():
    f = faker.Faker()
    f.add_provider(MachineProvider)
    return f


def _highest_zone(ram: int) -> int:
    low = ram if ram < 3 * GiB + GiB // 2 else 3 * GiB
    return ram - low if ram > low else low - 16 * MiB


# ---------------------------------------------------------------------- mm_config
def test_mm_config_is_always_valid_and_realistic(fake):
    for seed in SEEDS:
        fake.seed_instance(seed)
        cfg = fake.mm_config()
        assert isinstance(cfg, MMConfig)
        compute_layout(cfg)                                   # zones and CMA placement fit
        assert MMConfig(**{f: getattr(cfg, f) for f in MMConfig.__dataclass_fields__}) == cfg
        assert cfg.ram in (1 * GiB, 2 * GiB, 4 * GiB, 8 * GiB, 16 * GiB)
        assert cfg.movablecore % (128 * MiB) == 0
        assert cfg.movablecore <= _highest_zone(cfg.ram) // 4
        assert len(cfg.cma) <= 2
        assert all(c.size % (2 * MiB) == 0 and c.size > 0 for c in cfg.cma)
        assert 1 <= cfg.nr_cpus <= 4
        assert cfg.thp in ("always", "madvise", "never")
        assert set(cfg.hugetlb) <= {2 * MiB, 1 * GiB}
        assert cfg.kernel in KERNELS
        assert all(cfg.kernel in QUIRK_KERNELS[q] for q in cfg.quirks), cfg


def test_mm_config_covers_the_interesting_layouts(fake):
    seen = set()
    for seed in SEEDS:
        fake.seed_instance(seed)
        cfg = fake.mm_config()
        seen.add(("ram", cfg.ram))
        seen.add(("cma", len(cfg.cma)))
        seen.add(("movable", bool(cfg.movablecore)))
        seen.add(("bounded cma", any(c.start is not None for c in cfg.cma)))
        seen.add(("hugetlb", bool(cfg.hugetlb)))
        seen.add(("thp", cfg.thp))
        seen.add(("cpus", cfg.nr_cpus))
        seen.update(("quirk", q) for q in cfg.quirks)
        seen.add(("kernel", cfg.kernel))
        seen.update(("kernel+quirk", cfg.kernel, q) for q in cfg.quirks)
    expected = ({("ram", g * GiB) for g in (1, 2, 4, 8, 16)} | {("cma", n) for n in (0, 1, 2)}
                | {("movable", b) for b in (True, False)} | {("bounded cma", True), ("hugetlb", True)}
                | {("thp", t) for t in ("always", "madvise", "never")}
                | {("cpus", n) for n in (1, 2, 3, 4)}
                | {("quirk", "pcp_thp_shared_list"), ("quirk", "gup_keep_pins_on_isolation_failure")}
                | {("kernel", k) for k in KERNELS}
                | {("kernel+quirk", "6.1", "pcp_thp_shared_list"),
                   ("kernel+quirk", "6.12", "gup_drain_on_unexpected_ref_only")})
    assert expected <= seen, expected - seen
    kernels = [k for kind, *k in seen if kind == "kernel"]
    assert len(kernels) == len(KERNELS)
    quirky = 0
    for seed in SEEDS:
        fake.seed_instance(seed)
        quirky += bool(fake.mm_config().quirks)
    assert quirky < len(SEEDS) // 5                           # quirks are rare


def test_generated_machines_boot_with_their_hugetlb_pools(fake):
    for seed in range(60):
        fake.seed_instance(seed)
        cfg = fake.mm_config()
        k = FakeMM(cfg)
        for size, count in cfg.hugetlb.items():
            assert k.hstate(size).nr_huge_pages == count, (seed, cfg)
        assert len(k.cma_areas) == len(cfg.cma)
        assert ("Movable" in k.zones) == bool(cfg.movablecore)


def test_mm_config_overrides_are_kept_and_the_rest_fits_them(fake):
    for seed in range(100):
        fake.seed_instance(seed)
        cfg = fake.mm_config(ram="1GiB", thp="never", nr_cpus=3)
        assert (cfg.ram, cfg.thp, cfg.nr_cpus) == (1 * GiB, "never", 3)
        compute_layout(cfg)
        cfg = fake.mm_config(ram="3GiB", cma="64MiB")         # a RAM size it never draws
        assert cfg.ram == 3 * GiB and [c.size for c in cfg.cma] == [64 * MiB]
        compute_layout(cfg)


def test_mm_config_kernel_fits_the_overrides(fake):
    """The drawn kernel is one the overridden quirks and shmem_mthp allow; an overridden
    kernel is kept and only quirks its history has are drawn for it."""
    seen: dict[str, set[str]] = {}
    for seed in range(150):
        fake.seed_instance(seed)
        cfg = fake.mm_config(quirks="gup_drain_on_unexpected_ref_only")
        seen.setdefault("drain", set()).add(cfg.kernel)
        cfg = fake.mm_config(quirks=("pcp_thp_shared_list",))
        seen.setdefault("pcp", set()).add(cfg.kernel)
        cfg = fake.mm_config(shmem_mthp="64KiB:always")
        seen.setdefault("mthp", set()).add(cfg.kernel)
        cfg = fake.mm_config(quirks="gup_keep_pins_on_isolation_failure")
        seen.setdefault("keep", set()).add(cfg.kernel)
        for k in ("6.1", "6.12"):
            cfg = fake.mm_config(kernel=k)
            assert cfg.kernel == k and all(k in QUIRK_KERNELS[q] for q in cfg.quirks)
    assert seen == {"drain": {"6.12", "6.17"}, "pcp": {"6.1", "6.6", "6.17"}, "mthp": {"6.12", "6.17"},
                    "keep": {"6.17"}}


def test_mm_config_refuses_impossible_or_unknown_overrides(fake):
    with pytest.raises(ConfigError, match="quirks: 'gup_drain_on_unexpected_ref_only' contradicts kernel='6.1'"):
        fake.mm_config(kernel="6.1", quirks="gup_drain_on_unexpected_ref_only")
    with pytest.raises(ConfigError, match="kernel: expected one of"):
        fake.mm_config(kernel="5.4")
    with pytest.raises(ConfigError, match="thp: expected"):
        fake.mm_config(thp="sometimes")
    with pytest.raises(TypeError, match="ramm"):
        fake.mm_config(ramm="1GiB")


# ---------------------------------------------------------------------- determinism
def _draw(f, seed):
    f.seed_instance(seed)
    cfg = f.mm_config()
    return cfg, f.workload(n=15, config=cfg), f.workload(n=10), [f.fault_spec() for _ in range(5)]


def test_same_seed_same_outputs(fake):
    other = faker.Faker()
    other.add_provider(MachineProvider)
    for seed in (0, 1, 7, 12345):
        first = _draw(fake, seed)
        fake.random_int()                                      # disturb the state in between
        assert _draw(fake, seed) == first
        assert _draw(other, seed) == first                     # a fresh instance agrees


def test_different_seeds_differ(fake):
    draws = [_draw(fake, seed) for seed in range(20)]
    assert len({repr(d[0]) for d in draws}) >= 15
    assert len({repr(d[1]) for d in draws}) == 20
    assert len({repr(d[3]) for d in draws}) == 20


# ---------------------------------------------------------------------- workloads
def _check_workload(ops, config=None, balanced=True):
    mapped, nregions, held, npins, allocs, nallocs = set(), 0, set(), 0, set(), 0
    for op in ops:
        assert isinstance(op, tuple) and op and op[0] in WORKLOAD_OPS, op
        assert len(op) == WORKLOAD_OPS[op[0]], op
        name = op[0]
        if name == "mmap_anon":
            _, length, where = op
            assert isinstance(length, int) and length > 0 and length % 4096 == 0
            assert where in (None, "cma", "movable", "normal")
            if config is not None:
                assert where != "cma" or config.cma
                assert where != "movable" or config.movablecore
            mapped.add(nregions)
            nregions += 1
        elif name == "memfd":
            _, size, huge = op
            assert isinstance(huge, bool) and isinstance(size, int) and size > 0
            assert size % ((2 * MiB) if huge else 4096) == 0
            if config is not None and huge:
                assert config.hugetlb.get(2 * MiB) and config.default_hugepagesz == 2 * MiB
            mapped.add(nregions)
            nregions += 1
        elif name == "pin":
            _, region, longterm = op
            assert region in mapped and isinstance(longterm, bool)
            held.add(npins)
            npins += 1
        elif name == "unpin":
            held.remove(op[1])                                 # KeyError: not held
        elif name == "munmap":
            mapped.remove(op[1])
        elif name == "cma_alloc":
            assert op[1] in [1 << i for i in range(10)]
            assert config is None or config.cma
            allocs.add(nallocs)
            nallocs += 1
        elif name == "cma_release":
            allocs.remove(op[1])
    if balanced:
        assert not held and not allocs


def test_workload_ops_are_well_formed(fake):
    kinds = set()
    for seed in range(200):
        fake.seed_instance(seed)
        cfg = fake.mm_config()
        ops = fake.workload(n=30, config=cfg)
        _check_workload(ops, cfg)
        assert len([o for o in ops]) >= 30
        kinds.update(o[0] for o in ops)
        _check_workload(fake.workload(n=30), None)
        _check_workload(fake.workload(n=30, balanced=False), None, balanced=False)
    assert kinds == set(WORKLOAD_OPS)
    assert fake.workload(n=0) == []


def test_workloads_replay_on_their_machine_and_give_every_pin_back(fake):
    for seed in range(25):
        fake.seed_instance(seed)
        cfg = fake.mm_config()
        k = FakeMM(cfg)
        ops = fake.workload(n=25, config=cfg)
        results = replay(k, ops)
        assert len(results) == len(ops)
        for op, res in zip(ops, results):
            if op[0] == "pin" and res is not None:
                assert res > 0 or res < 0
        assert k.stats.nr_foll_pin_acquired == k.stats.nr_foll_pin_released, (seed, ops)
        assert not k.warnings, (seed, k.warnings)


def test_replay_refuses_unknown_ops():
    with pytest.raises(ValueError, match="expected an op"):
        replay(FakeMM(MMConfig(ram="1GiB")), [("explode", 1)])


# ---------------------------------------------------------------------- fault specs
_SPEC_SHAPE = re.compile(r"^[A-Za-z_][\w.]*(\[[a-z]+=\w+(,[a-z]+=\w+)*\])?="
                         r"(\d+%)?(\d+\*)?(return(\([A-Z]+\))?|off)(->(\d+\*)?(return|off))*$")


def test_fault_specs_have_the_grammar_shape(fake):
    for seed in range(300):
        fake.seed_instance(seed)
        spec = fake.fault_spec()
        assert _SPEC_SHAPE.match(spec), spec
        assert spec.split("[")[0].split("=")[0] in BUILTIN_SITES
    fake.seed_instance(0)
    assert all(fake.fault_spec(["driver.sg_alloc"]).startswith("driver.sg_alloc") for _ in range(20))
    assert len(fake.fault_specs(3).split(";")) == 3
    with pytest.raises(ValueError, match="at least one site"):
        fake.fault_spec([])


def test_fault_specs_parse_with_the_engine(fake):
    try:
        spec_mod = importlib.import_module("pytest_pinfault.faults.spec")
        parse_spec = spec_mod.parse_spec
    except (ImportError, AttributeError) as exc:
        pytest.skip(f"pytest_pinfault.faults.spec.parse_spec is not there yet (issue 4 engine): {exc}")
    validate = getattr(spec_mod, "validate_spec", None)
    forms = set()
    for seed in range(300):
        fake.seed_instance(seed)
        text = fake.fault_spec()
        spec = parse_spec(text)
        assert spec.site in BUILTIN_SITES, text
        if validate is not None:
            validate(spec, BUILTIN_SITES)
        forms.add(re.sub(r"\d+", "N", text.split("=", 1)[1] if "[" not in text else text.split("]", 1)[1]))
    assert len(forms) >= 6
    fake.seed_instance(3)
    assert len(spec_mod.parse_specs(fake.fault_specs(4))) == 4


# ---------------------------------------------------------------------- the fixture
_INNER_ARGS = ("-p", "no:cacheprovider", "-p", "faker.contrib.pytest.plugin",
               "-p", "pytest_pinfault.plugin", "-p", "pytest_pinfault.plugin.faker_support", "-s")

_INNER_TEST = """
    from pytest_pinfault import FakeMM, MMConfig

    def test_a(pinfault_faker):
        cfg = pinfault_faker.mm_config()
        assert isinstance(cfg, MMConfig)
        FakeMM(cfg)
        print("OUT-a", repr(cfg), pinfault_faker.workload(n=8), pinfault_faker.fault_spec())

    def test_b(pinfault_faker, faker):
        assert pinfault_faker is faker          # the same seeded instance, provider added once
        print("OUT-b", repr(pinfault_faker.mm_config(ram="2GiB")))
"""


def _outputs(result):
    return [line[line.index("OUT-"):] for line in result.outlines if "OUT-" in line]


def test_pinfault_faker_fixture_end_to_end(pytester, monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(test_inner=_INNER_TEST)
    first = pytester.runpytest(*_INNER_ARGS)
    first.assert_outcomes(passed=2)
    again = pytester.runpytest(*_INNER_ARGS)
    assert _outputs(first) == _outputs(again) and len(_outputs(first)) == 2

    # a faker_seed override makes it deterministic under that seed, and the seed matters
    pytester.makeconftest("""
        import pytest

        @pytest.fixture
        def faker_seed():
            return 4242
    """)
    seeded = pytester.runpytest(*_INNER_ARGS)
    seeded.assert_outcomes(passed=2)
    assert _outputs(seeded) == _outputs(pytester.runpytest(*_INNER_ARGS))
    assert _outputs(seeded) != _outputs(first)

    # the same seed outside pytest gives the same machine
    f = faker.Faker()
    f.add_provider(MachineProvider)
    f.seed_instance(4242)
    assert repr(f.mm_config()) in _outputs(seeded)[0]


def test_pinfault_faker_without_fakers_plugin_says_what_to_load(pytester, monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile("def test_x(pinfault_faker):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "pytest_pinfault.plugin",
                                "-p", "pytest_pinfault.plugin.faker_support")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*pinfault_faker: expected Faker's pytest plugin*-p faker.contrib.pytest.plugin*"])
    result.stdout.no_fnmatch_line("*During handling*")


def test_importing_the_faker_support_module_does_not_import_faker():
    import subprocess
    import sys
    code = ("import sys; import pytest_pinfault.plugin.faker_support; "
            "sys.exit(3 if 'faker' in sys.modules else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr or "faker imported at plugin import time"


def test_the_provider_module_does_not_import_pytest():
    import subprocess
    import sys
    code = ("import sys; import pytest_pinfault.faker_provider; "
            "sys.exit(3 if 'pytest' in sys.modules or '_pytest' in sys.modules else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr or "pytest imported by the provider"
