"""Every chaos scenario, for `make chaos` (docs/chaos.md): the short ones of
tests/integration/test_chaos.py (also part of `make test`) and the long
ones, which only run here.

    make chaos                       # all of them, figures in build/chaos/
    python3 tests/run.py -v --integration-dir tests/chaos -k postgres
"""

import harness
import test_chaos
from test_chaos import (test_chaos_gateway_holder_kill9, test_chaos_model_hang,  # noqa: F401 - run from here too
                        test_chaos_redis_kill9_restart_on_aof)


@harness.timeout(240)
def test_chaos_postgres_stopped_30s(t):
    test_chaos.postgres_stopped_30s(t)


@harness.timeout(240)
def test_chaos_model_hang_long_tail(t):
    """The model hang again, with the load going on for 50 s after the
    model is back: long enough to see the service recover (the short
    version in test_chaos ends while the key may still be cooling down)."""
    test_chaos.model_hang(t, "model_hang_long_tail", after_s=50.0)


@harness.timeout(150)
def test_chaos_gateway_holder_kill9_short_lease(t):
    """The holder kill with a 2 s lease (test_failover's setting): the gap
    is shorter than Discord's 3 s acknowledgement window."""
    test_chaos.holder_kill9(t, "gateway_holder_kill9_lease2s", lease_ms=2000)
