"""The ``case`` fixture: every shared test body runs once per row of ``adapter_cases.CASES``."""
import pytest

from adapter_cases import CASES, Case


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    return request.param
