import os

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A small synthetic dataset shared by the tests that need real images."""
    from trainables.data import read_index

    root = tmp_path_factory.mktemp("synthetic") / "data"
    read_index({"kind": "synthetic", "root": str(root), "num_images": 480, "size": 32, "seed": 0})
    return root
