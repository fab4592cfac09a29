"""Speed and memory of the kit, measured in one run: ``python -m benchmarks.bench`` from the
repository root. One module per family of measurements (:mod:`.data`, :mod:`.speed`,
:mod:`.profile`, :mod:`.convergence`), shared helpers in :mod:`.common`, the runner in
:mod:`.__main__`."""
