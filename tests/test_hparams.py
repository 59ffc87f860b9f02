import pytest

from trainables.errors import ConfigError
from trainables.hparams import HParams
from trainables.losses import method_names


def test_defaults_are_the_papers():
    hp = HParams.from_dict({"method": "ckd"})
    assert (hp.options.tau, hp.lam, hp.batch_size, hp.options.k) == (0.05, 0.1, 24, 32)


def test_casts_strings_and_floats_from_mlflow_and_optuna():
    hp = HParams.from_dict({"k": 32.0, "tau": "0.1", "symmetric": "True", "method": "ckd", "epochs": "3"})
    assert hp.options.k == 32 and isinstance(hp.options.k, int)
    assert hp.options.tau == 0.1 and hp.options.symmetric is True and hp.epochs == 3


@pytest.mark.parametrize("config,match", [
    ({"lambda": 0.1}, r"unknown key\(s\) \['lambda'\]"),
    ({"method": "ckd", "k": 0}, "k=0 must be > 0"),
    ({"method": "ckd", "k": 2.5}, "k=2.5 is not a valid int"),
    ({"method": "ckd", "tau": -1.0}, "tau=-1.0 must be > 0"),
    ({"method": "dkd"}, "method='dkd' is not one of"),
    ({"method": "ckd", "z_mode": "zero"}, "z_mode='zero'"),
    ({"method": "ckd", "momentum": 1.0}, r"momentum=1.0 must be in \[0, 1\)"),
    ({"method": "ckd", "symmetric": "maybe"}, "not a valid bool"),
    ({"method": "kd", "kd_t": 0}, r"kd_t=0.0 must be > 0"),
    ({"batch_size": 0}, "batch_size=0 must be > 0"),
])
def test_bad_values_name_the_key(config, match):
    with pytest.raises(ConfigError, match=match):
        HParams.from_dict(config, where="test")


def test_replace_revalidates():
    with pytest.raises(ConfigError):
        HParams().replace(batch_size=0)


@pytest.mark.parametrize("method", method_names())
def test_a_method_takes_the_common_keys_and_its_own_options_only(method):
    hp = HParams.from_dict({"method": method})
    own = set(hp.to_dict()) - set(HParams.common_keys())
    assert own == {f for f in hp.options.__dataclass_fields__}  # what a run logs: its own options
    for other in method_names():
        foreign = sorted(set(HParams.keys(other)) - set(HParams.keys(method)))
        if foreign:  # another method's option is refused, naming it
            with pytest.raises(ConfigError, match=f"unknown key.*{foreign[0]}.*for method '{method}'"):
                HParams.from_dict({"method": method, foreign[0]: HParams.from_dict({"method": other}).to_dict()[foreign[0]]})


def test_vanilla_training_logs_no_distillation_option():
    assert set(HParams().to_dict()) == set(HParams.common_keys())
    assert "tau" not in HParams.from_dict({"method": "kd"}).to_dict()
    assert HParams.from_dict({"method": "ckd", "tau": 0.2}).replace(method="kd").to_dict()["kd_t"] == 4.0


def test_subset_keeps_what_a_method_takes():
    fixed = {"epochs": 3, "tau": 0.2, "kd_t": 2.0}
    assert HParams.subset(fixed, "ckd") == {"epochs": 3, "tau": 0.2}
    assert HParams.subset(fixed, "kd") == {"epochs": 3, "kd_t": 2.0}
