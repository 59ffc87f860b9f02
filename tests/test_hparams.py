import pytest

from trainables.errors import ConfigError
from trainables.hparams import HParams


def test_defaults_are_the_papers():
    hp = HParams()
    assert (hp.tau, hp.lam, hp.batch_size, hp.k) == (0.05, 0.1, 24, 32)


def test_casts_strings_and_floats_from_mlflow_and_optuna():
    hp = HParams.from_dict({"k": 32.0, "tau": "0.1", "symmetric": "True", "method": "ckd"})
    assert hp.k == 32 and isinstance(hp.k, int)
    assert hp.tau == 0.1 and hp.symmetric is True


@pytest.mark.parametrize("config,match", [
    ({"lambda": 0.1}, r"unknown key\(s\) \['lambda'\]"),
    ({"k": 0}, "k=0 must be > 0"),
    ({"k": 2.5}, "k=2.5 is not a valid int"),
    ({"tau": -1.0}, "tau=-1.0 must be > 0"),
    ({"method": "crd"}, "method='crd' is not one of"),
    ({"z_mode": "zero"}, "z_mode='zero'"),
    ({"momentum": 1.0}, r"momentum=1.0 must be in \[0, 1\)"),
    ({"symmetric": "maybe"}, "not a valid bool"),
])
def test_bad_values_name_the_key(config, match):
    with pytest.raises(ConfigError, match=match):
        HParams.from_dict(config, where="test")


def test_replace_revalidates():
    with pytest.raises(ConfigError):
        HParams().replace(batch_size=0)
