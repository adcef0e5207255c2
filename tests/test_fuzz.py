"""A bounded, seeded run of the fuzz target tests/fuzz/fuzz_loader.py: valid model files mutated
byte by byte, forged files re-signed after edits to their architecture and tensor table, and fit
on arrays decoded from bytes. Only success or the documented exceptions may come out (see
fuzz_loader.ALLOWED and LOADER_ALLOWED); a crash, a hang (watchdog) or any other exception fails.

The inputs are the same on every run (seed 0), so a failure reproduces; the time budget
(CHAINRULE_FUZZ_TEST_SECONDS, default 10) only decides how far along the sequence a run gets.
.ci/sanitize runs the coverage-guided fuzzer for longer, under the sanitizers.
"""
from __future__ import annotations

import faulthandler
import os
import sys
from pathlib import Path

import chainrule as cr

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))
import fuzz_loader  # noqa: E402

BUDGET_SECONDS = float(os.environ.get("CHAINRULE_FUZZ_TEST_SECONDS", "10"))
MIN_INPUTS = 200  # far fewer than a run gets through, even under ASan on a loaded machine


def test_seed_files_load_and_predict():
    for blob in fuzz_loader.seeds():
        model = cr.from_bytes(blob)
        fuzz_loader._check_loaded(model)


def test_mutated_inputs_end_in_success_or_a_documented_exception(tmp_path):
    current = {}

    def watch(i: int, data: bytes) -> None:
        current["i"], current["data"] = i, data
        # a hang: dump every thread's stack and exit (to the real stderr: pytest may have
        # replaced sys.stderr with an object without a file descriptor)
        faulthandler.dump_traceback_later(fuzz_loader.HANG_SECONDS, exit=True,
                                          file=sys.__stderr__)

    try:
        n, seconds = fuzz_loader.run_plain(BUDGET_SECONDS, seed=0, on_input=watch)
    except Exception as e:
        path = tmp_path / f"finding-{current['i']}"
        path.write_bytes(current["data"])
        raise AssertionError(
            f"fuzz input {current['i']} raised {type(e).__name__}: {e}\nsaved to {path}; "
            f"replay: python tests/fuzz/fuzz_loader.py --replay {path}") from e
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert n >= MIN_INPUTS, f"only {n} inputs in {seconds:.1f} s"
    # every target was reached, and some inputs got all the way through each
    outcomes = {(t, o) for t, o in fuzz_loader.STATS}
    assert {"raw", "forged", "fit"} <= {t for t, _ in outcomes}
    assert ("forged", "loaded") in outcomes and ("fit", "trained") in outcomes
