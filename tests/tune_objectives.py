"""Objectives for the search tests, importable by worker processes (spawned pools, Dask)."""

import math
import os
import threading
import time


def bowl(params):
    """A known optimum: lr = 1e-2 and x = 0.3 (the metric is highest there: 0)."""
    return -((math.log10(params["lr"]) + 2) ** 2) - (params.get("x", 0.3) - 0.3) ** 2


def sleepy_bowl(params):
    time.sleep(params.get("sleep", 0.3))
    return {"val_acc": bowl(params), "pid": os.getpid()}


def counted(params):
    """Appends one line per call to COUNT_FILE (so a test can count the calls across processes)."""
    with open(os.environ["GPUNET_TEST_COUNT_FILE"], "a") as f:
        f.write(f"{params['i']}\n")
    time.sleep(float(os.environ.get("GPUNET_TEST_SLEEP", "0")))
    return params["i"] / 10


def flaky(params):
    if params["i"] % 3 == 1:
        raise RuntimeError(f"trial {params['i']} broke")
    if params["i"] % 3 == 2:
        return float("nan")
    return 1.0


CONCURRENCY = {"running": 0, "peak": 0, "lock": threading.Lock()}


def one_at_a_time_probe(params):
    """Records how many trials run at once in this process (for in-process Dask workers)."""
    with CONCURRENCY["lock"]:
        CONCURRENCY["running"] += 1
        CONCURRENCY["peak"] = max(CONCURRENCY["peak"], CONCURRENCY["running"])
    time.sleep(0.1)
    with CONCURRENCY["lock"]:
        CONCURRENCY["running"] -= 1
    return 1.0


def dies(params):
    """Kills its worker process: on the first call of params['i'] when die == 'once', on every
    call when die == 'always' (markers in GPUNET_TEST_DIR count the calls across processes)."""
    folder = os.environ["GPUNET_TEST_DIR"]
    marker = os.path.join(folder, f"died-{params['i']}")
    if params.get("die") == "always" or (
        params.get("die") == "once" and not os.path.exists(marker)
    ):
        with open(marker, "a") as f:
            f.write("x")
        os._exit(1)
    return params["i"] / 10
