"""Run one fuzz target under atheris (libFuzzer), seeded from the real vectors.

    python fuzz/run.py codec -max_total_time=60
    python fuzz/run.py writer -runs=5000 -seed=1
    python fuzz/run.py dispatch -max_total_time=60
    python fuzz/run.py stream -max_total_time=60

Arguments after the target go to libFuzzer as they are. New coverage goes to
``fuzz/corpus/<target>/`` (not versioned); the vectors (and inputs derived from
their decoded fields) are a seed corpus written to ``fuzz/corpus/seeds-<target>/``
(next to the first corpus directory given) on every run. A failing input is written
to ``tests/fuzz_regressions/<target>/`` unless ``-artifact_prefix=`` is given,
and the regression test replays it from then on: commit it with the fix.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import atheris  # type: ignore[import-untyped]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

with atheris.instrument_imports(include=["binif"]):
    # Instrumented before the targets import them.
    import binif
    import binif.dispatch
    import binif.framing
    import binif.opensips21  # noqa: F401

import targets  # noqa: E402


def main(argv: list[str]) -> None:
    """Parse ``TARGET [libFuzzer flags]`` and fuzz until libFuzzer stops."""
    if len(argv) < 2 or argv[1] not in targets.TARGETS:
        sys.exit(f"usage: {argv[0]} {{{','.join(targets.TARGETS)}}} [libFuzzer flags]")
    name, flags = argv[1], argv[2:]
    target = targets.TARGETS[name]
    corpus = HERE / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(flag.startswith("-artifact_prefix=") for flag in flags):
        crashes = ROOT / "tests" / "fuzz_regressions" / name
        crashes.mkdir(parents=True, exist_ok=True)
        flags.append(f"-artifact_prefix={crashes}/")
    if not any(flag.startswith("-max_len=") for flag in flags):
        flags.append("-max_len=8192")
    corpora = [arg for arg in flags if not arg.startswith("-")] or [str(corpus)]
    flags = [arg for arg in flags if arg.startswith("-")]
    for directory in corpora:
        Path(directory).mkdir(parents=True, exist_ok=True)
    # The seeds are written next to the first corpus, afresh on every run.
    seed_dir = Path(corpora[0]).resolve().parent / f"seeds-{name}"
    shutil.rmtree(seed_dir, ignore_errors=True)
    seed_dir.mkdir()
    for index, data in enumerate(targets.seeds(name)):
        (seed_dir / f"seed-{index:03d}").write_bytes(data)

    def test_one_input(data: bytes) -> None:
        targets.run_one(target, data)

    atheris.Setup([argv[0], *flags, *corpora, str(seed_dir)], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
