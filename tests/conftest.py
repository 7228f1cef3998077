import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def seed():
    """Seed every test."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield
