"""Strict numerics for every test: float64 available, no silent dtype or rank promotion.

Two profiles, chosen by ``CONVJAX_HYPOTHESIS_PROFILE``:

- ``default``: hypothesis draws 8 configs per property (a fixed, derandomised set, so a run is
  repeatable); a test parametrised over several arguments runs a covering of its cases, in which
  every value of every argument appears (:func:`covering`); tests marked ``deep`` are left out;
  and XLA:CPU compiles with backend optimisation level 0 and its classic elemental emitters
  instead of the fusion emitters (the same results; most of the suite's time is compiling small
  programs, and together these compile them about twice as fast);
- ``thorough``: every case, 400 fresh configs per property, compiled as users compile them.
"""

import os
import pathlib
import signal
import threading

PROFILE = os.environ.get("CONVJAX_HYPOTHESIS_PROFILE", "default")
if PROFILE != "thorough":  # before JAX starts a backend; notebook kernels inherit it
    os.environ["XLA_FLAGS"] = " ".join(
        filter(
            None,
            [
                os.environ.get("XLA_FLAGS"),
                "--xla_backend_optimization_level=0",
                "--xla_cpu_use_fusion_emitters=false",
            ],
        )
    )

import hypothesis  # noqa: E402
import jax  # noqa: E402

# One persistent compilation cache for the run's workers (and later runs): identical programs,
# eager primitives above all, are compiled once.  Keyed by the program, flags and versions.
jax.config.update(
    "jax_compilation_cache_dir",
    os.environ.get(
        "CONVJAX_TEST_JAX_CACHE", str(pathlib.Path(__file__).parents[1] / ".pytest_cache" / "jax")
    ),
)
# Autotuned choices stay beside it, out of the user's own cache folder.
os.environ.setdefault(
    "CONVJAX_CACHE_DIR", str(pathlib.Path(__file__).parents[1] / ".pytest_cache" / "convjax")
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

hypothesis.settings.register_profile(
    "default",
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow, hypothesis.HealthCheck.data_too_large],
)
hypothesis.settings.register_profile(
    "thorough",
    parent=hypothesis.settings.get_profile("default"),
    max_examples=400,
    derandomize=False,
)
hypothesis.settings.load_profile(PROFILE)


def pytest_report_header(config):
    if PROFILE == "thorough":
        return "convjax profile: thorough (every case, 400 hypothesis configs per property)"
    return (
        "convjax profile: default (a covering of each parametrised test's cases, no deep tests; "
        "CONVJAX_HYPOTHESIS_PROFILE=thorough runs every case)"
    )


def pytest_collection_modifyitems(config, items):
    """The default profile runs a covering of each parametrised test's cases (see
    :func:`covering`) and leaves the tests marked ``deep`` to the thorough profile, which runs
    every case; pytest counts what it leaves as deselected.  Tests marked ``slow`` run first,
    so that the workers share out the short ones at the end and finish together instead of one
    waiting on the other's last long test."""
    if PROFILE != "thorough":
        kept = {item for item in covering(items) if not item.get_closest_marker("deep")}
        left = [item for item in items if item not in kept]
        if left:
            config.hook.pytest_deselected(items=left)
            items[:] = [item for item in items if item in kept]
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def covering(items):
    """The cases the default profile runs: of each test parametrised over two or more arguments,
    a few cases in which every value of every argument appears at least once (chosen greedily,
    most new values first, then in collection order); every case of the others and of tests
    marked ``every_case`` (with ``argument=value``: every case with that value, e.g. the
    default formulation crossed with everything).  Each value is still tested; the thorough
    profile crosses them all."""
    by_test = {}
    for item in items:
        callspec = getattr(item, "callspec", None)
        whole = item.get_closest_marker("every_case")
        if (
            callspec is None
            or len(callspec.params) < 2
            or (whole and all(callspec.params.get(k) == v for k, v in whole.kwargs.items()))
        ):
            by_test[item.nodeid] = [item]
        else:
            by_test.setdefault(item.nodeid.split("[")[0], []).append(item)
    kept = set()
    for cases in by_test.values():
        if len(cases) == 1:
            kept.update(cases)
            continue
        values = {item: {(k, repr(v)) for k, v in item.callspec.params.items()} for item in cases}
        missing = set().union(*values.values())
        while missing:
            best = max(cases, key=lambda item: len(values[item] & missing))
            kept.add(best)
            missing -= values[best]
    return kept


def pytest_sessionfinish(session):
    """An xdist worker ignores SIGINT once its tests are done, so a passing run ends cleanly.

    When the controller has every result it tells the workers to exit; execnet's worker gives
    its main thread 5 seconds to return, then sends its own process a SIGINT
    (``WorkerGateway._terminate_execution``).  A worker with a large heap can still be inside
    pytest's final ``gc.collect()`` (``unraisableexception``'s unconfigure) by then, and the
    signal's KeyboardInterrupt is raised in the first Python code the collector runs: a gc
    callback, hypothesis' ``gc_callback`` (``internal/conjecture/junkdrawer.py``, inserted first
    in ``gc.callbacks``) or JAX's.  A gc callback cannot raise, so the interrupt is printed as an
    ignored exception with its traceback.  Nothing is left to interrupt by then: this hook runs
    just before the worker reports it has finished, and from there on the worker ignores SIGINT
    (execnet still ends a worker stuck for 10 more seconds with ``os._exit``).  The controller,
    and a run without xdist, keep Ctrl-C.
    """
    if hasattr(session.config, "workerinput") and threading.current_thread() is (
        threading.main_thread()
    ):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
