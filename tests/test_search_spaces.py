import optuna
import pytest

from search_spaces import SPACE_METHODS, SPACES, get_space, space_keys
from trainables.errors import ConfigError
from trainables.hparams import HParams


def _fixed(**params):
    return optuna.trial.FixedTrial(params)


@pytest.mark.parametrize("name", sorted(SPACES))
def test_every_space_gives_valid_hparams(name):
    """Whatever a space samples (and returns) is a valid trial of the method: every registered
    space, with no table of values here that a new method would have to extend."""
    for method in SPACE_METHODS[name]:
        for seed in range(3):
            trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()
            constants = get_space(name, method, volume=100)(trial)
            hp = HParams.from_dict({**trial.params, **constants})
            assert hp.method == method


def test_ckd_space_declares_exactly_its_parameters():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    get_space("ckd", "ckd", 100)(trial)
    assert set(trial.params) == {"tau", "lam", "k", "z_mode", "negatives", "symmetric", "batch_size", "lr",
                                 "weight_decay"}
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


@pytest.mark.parametrize("name", sorted(SPACES))
def test_space_keys_are_what_an_optuna_trial_sees(name):
    """`space_keys` (no Optuna study) lists what a real Optuna trial declares, plus the constants."""
    for method in SPACE_METHODS[name]:
        trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1)).ask()
        constants = get_space(name, method, 100)(trial)
        assert set(space_keys(name, method, 100)) == set(trial.params) | (set(constants) - {"method"})


def test_every_method_space_searches_the_same_optimiser_knobs():
    from trainables.methods import method_names
    for name in method_names():  # every declared method: its own space is named after it
        assert {"batch_size", "lr", "weight_decay"} <= set(space_keys(name, name, 100)), name
    assert space_keys("rkd", "rkd", 100) == ("batch_size", "lam", "lr", "rkd_angle_w", "rkd_distance_w",
                                             "weight_decay")
    assert space_keys("paper", "vt", 10) == ("batch_size",)
