"""Each failed allocation carries the ``reason`` label it is counted under."""

import pytest

from porterlb.manager import metrics, service_plan
from tests.unit.manager.test_service_plan import FAILURES, WEB, crowded, default_lan, service

LABELS = {
    "pool-full": "pool_full",
    "ip-outside-pool": "ip_outside_pool",
    "ip-broadcast": "ip_outside_pool",
    "ip-network": "ip_outside_pool",
    "ip-in-use": "ip_in_use",
    "ip-in-use-other-sharing-key": "ip_in_use",
    "ip-in-use-port-clash": "ip_in_use",
    "ip-in-no-pool": "no_pool",
    "family-mismatch": "family_mismatch",
    "no-pool-of-the-family": "no_pool",
    "pool-disabled": "pool_disabled",
    "requested-ip-in-disabled-pool": "pool_disabled",
    "pool-missing": "no_pool",
    "pool-rejected": "pool_missing",
    "pool-deleting": "pool_missing",
    "pool-not-layer2": "pool_missing",
    "protocol-not-layer2": "invalid_spec",
    "ip-unparsable": "invalid_spec",
}


@pytest.mark.parametrize(("eips", "kwargs", "message"), FAILURES)
def test_a_failed_plan_names_its_reason(eips, kwargs, message, request):
    plan = service_plan.decide(WEB, service(**kwargs), crowded(eips))
    assert plan.failure == LABELS[request.node.callspec.id]
    assert plan.failure in {*metrics.POOL_FAILURES.values(), "invalid_spec"}


def test_a_plan_that_works_has_no_failure():
    assert service_plan.decide(WEB, service(), default_lan()).failure is None
