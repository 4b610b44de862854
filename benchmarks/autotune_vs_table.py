"""How often ``impl="autotune"`` disagrees with ``impl="auto"``'s table on this machine, and by
how much.

Autotunes every convolution of ``convjax bench``'s layer suite and of the reference
architectures' training steps (``convjax bench --models``): each distinct (spec, shapes, dtype,
transposed) is timed once per formulation that accepts it — its convolution and the gradients of
a loss of its output, alternating in rounds — in a fresh cache folder, so nothing is read from an
earlier run.  For each, the table's formulation's time over the winner's: 1.00 where they agree.

Run ``python benchmarks/autotune_vs_table.py [--models NAME ...] [--no-suite]``; a few minutes on
a 2-core CPU.  Timing noise on a shared machine moves close calls either way: a disagreement
within ~10% is a tie.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

import jax
import jax.numpy as jnp

from convjax._src.formulations import autotune
from convjax.apps import bench, models


def tune_suite() -> None:
    """Trace every suite case's gradient on ``autotune`` (tuning each convolution once)."""
    for case in bench.SUITE:
        x = jnp.zeros(case.x_shape, jnp.float32)
        kernel = jnp.zeros(case.kernel_shape, jnp.float32)

        def loss(x, kernel, case=case):
            return jnp.sum(case.function(x, kernel, impl="autotune", **case.options) ** 2)

        jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, kernel)


def tune_models(names) -> None:
    """Build each architecture's training step on ``autotune``: tracing it tunes its layers."""
    framework = models.ConvjaxFramework("autotune")
    for name in names:
        architecture = models.architecture(name)
        network = framework.network(architecture)
        framework.step(network, framework.batch(architecture, *architecture.data(), "float32"))


def report() -> str:
    records = list(autotune._choices.values())
    lines = [
        f"{'convolution':<100} {'table':>7} {'autotune':>9} {'table/best':>10}",
        "-" * 130,
    ]
    ratios = []
    for r in records:
        times = r["timings_ms"]
        ratio = times[r["table"]] / times[r["choice"]]
        ratios.append(ratio)
        described = r["description"][:100]
        lines.append(f"{described:<100} {r['table']:>7} {r['choice']:>9} {ratio:>10.2f}")
    differ = [q for q in ratios if q > 1.0]
    clear = [q for q in ratios if q > 1.1]
    lines += [
        "",
        f"{len(records)} convolutions; autotune chose differently from the table on {len(differ)}"
        f", by more than 10% on {len(clear)}.",
    ]
    if differ:
        lines.append(
            f"Where they differ, the table's choice takes {statistics.median(differ):.2f}x the "
            f"winner's time (median; max {max(differ):.2f}x)."
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(models.ARCHITECTURES))
    parser.add_argument("--no-suite", action="store_true", help="leave the layer suite out")
    args = parser.parse_args(argv)
    unknown = set(args.models) - set(models.ARCHITECTURES)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; of {list(models.ARCHITECTURES)}")
    with tempfile.TemporaryDirectory() as folder:
        os.environ["CONVJAX_CACHE_DIR"] = folder
        if not args.no_suite:
            tune_suite()
        tune_models(args.models)
    print(report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
