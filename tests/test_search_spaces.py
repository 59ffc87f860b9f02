import optuna
import pytest

from search_spaces import SPACE_METHODS, SPACES, get_space
from trainables.errors import ConfigError
from trainables.hparams import HParams


def _fixed(**params):
    return optuna.trial.FixedTrial(params)


FIXED = {
    "vt": dict(batch_size=16, lr=1e-3),
    "kd": dict(kd_t=4.0, lam=1.0, batch_size=16, lr=1e-3),
    "rkd": dict(rkd_distance_w=25.0, rkd_angle_w=50.0, batch_size=16, lr=1e-3),
    "ckd": dict(tau=0.05, lam=0.1, k=32, z_mode="none", negatives="instance", symmetric=True,
                batch_size=24, lr=1e-3),
}


@pytest.mark.parametrize("name", sorted(SPACES))
def test_every_space_gives_valid_hparams(name):
    for method in SPACE_METHODS[name]:
        params = FIXED.get(name, {})
        trial = _fixed(**params)
        constants = get_space(name, method, volume=100)(trial)
        hp = HParams.from_dict({**params, **constants})
        assert hp.method == method


def test_ckd_space_declares_exactly_its_parameters():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    get_space("ckd", "ckd", 100)(trial)
    assert set(trial.params) == {"tau", "lam", "k", "z_mode", "negatives", "symmetric", "batch_size", "lr"}
    assert 0.01 <= trial.params["tau"] <= 1.0
    assert trial.params["k"] in (8, 16, 32, 64, 128)


def test_paper_space_is_the_papers_numbers():
    ckd = get_space("paper", "ckd", 1000)(_fixed())
    assert (ckd["tau"], ckd["lam"], ckd["batch_size"], ckd["k"]) == (0.05, 0.1, 24, 32)
    small = get_space("paper", "ckd", 10)(_fixed())
    assert (small["batch_size"], small["k"]) == (10, 10)
    assert get_space("paper", "kd", 100)(_fixed())["kd_t"] == 4.0
    rkd = get_space("paper", "rkd", 100)(_fixed())
    assert (rkd["rkd_distance_w"], rkd["rkd_angle_w"]) == (25.0, 50.0)


def test_paper_space_declares_nothing():
    study = optuna.create_study()
    trial = study.ask()
    get_space("paper", "ckd", 100)(trial)
    assert trial.params == {}


def test_unknown_space_or_wrong_method_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown search space 'nope'"):
        get_space("nope", "ckd", 10)
    with pytest.raises(ConfigError, match="tunes"):
        get_space("kd", "ckd", 10)
