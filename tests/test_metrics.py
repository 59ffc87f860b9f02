import math

import pytest

from trainables.metrics import compute_metrics

LABELS = [0, 0, 1, 1]
PROBS = [0.1, 0.6, 0.4, 0.9]


def test_frame_metrics_by_hand():
    m = compute_metrics(LABELS, PROBS)
    assert m["acc"] == pytest.approx(0.5)  # predictions 0,1,0,1
    assert m["bacc"] == pytest.approx(0.5)  # real recall 1/2, fake recall 1/2
    assert m["auc"] == pytest.approx(3 / 4)  # 3 of 4 (fake, real) pairs ordered right
    assert m["eer"] == pytest.approx(0.5)  # at 0.5: one false positive of 2, one miss of 2
    assert m["ap"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_perfect_separation():
    m = compute_metrics([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.8])
    assert (m["acc"], m["auc"], m["eer"], m["ap"]) == (1.0, 1.0, 0.0, 1.0)


def test_video_level_averages_frames():
    m = compute_metrics(LABELS, PROBS, videos=["a", "a", "b", "b"])
    # video a: mean 0.35 (real), b: 0.65 (fake)
    assert m["video_acc"] == 1.0 and m["video_auc"] == 1.0


def test_balanced_accuracy_on_an_unbalanced_set_by_hand():
    # 2 real, 6 fake; everything called fake: ACC 6/8, but real recall 0 and fake recall 1
    m = compute_metrics([0, 0, 1, 1, 1, 1, 1, 1], [0.9] * 8)
    assert m["acc"] == pytest.approx(0.75) and m["bacc"] == pytest.approx(0.5)
    # one real right, 4 of 6 fakes right: (1/2 + 4/6) / 2
    m = compute_metrics([0, 0, 1, 1, 1, 1, 1, 1], [0.1, 0.9, 0.9, 0.9, 0.9, 0.9, 0.2, 0.3])
    assert m["bacc"] == pytest.approx((1 / 2 + 4 / 6) / 2)


def test_one_class_gives_nan_not_an_exception():
    m = compute_metrics([1, 1], [0.7, 0.2])
    assert m["acc"] == 0.5 and math.isnan(m["auc"]) and math.isnan(m["eer"])


# video rules: r1, r2 real, f1, f2 fake, two frames each
RULE_LABELS = [0, 0, 0, 0, 1, 1, 1, 1]
RULE_PROBS = [0.2, 0.9, 0.3, 0.3, 0.6, 0.6, 0.2, 0.7]
RULE_VIDEOS = ["r1", "r1", "r2", "r2", "f1", "f1", "f2", "f2"]


def test_mean_and_max_video_rules_by_hand():
    mean = compute_metrics(RULE_LABELS, RULE_PROBS, RULE_VIDEOS, video_rule="mean")
    # means r1 .55 r2 .30 f1 .60 f2 .45: r1 and f2 wrong at 0.5; f2 < r1 is the one misordered pair
    assert mean["video_acc"] == pytest.approx(0.5) and mean["video_auc"] == pytest.approx(3 / 4)
    assert mean == compute_metrics(RULE_LABELS, RULE_PROBS, RULE_VIDEOS)  # mean is the default
    maxed = compute_metrics(RULE_LABELS, RULE_PROBS, RULE_VIDEOS, video_rule="max")
    # maxima r1 .9 r2 .3 f1 .6 f2 .7: only r1 wrong; both fakes below r1
    assert maxed["video_acc"] == pytest.approx(3 / 4) and maxed["video_auc"] == pytest.approx(1 / 2)
    assert {k: v for k, v in maxed.items() if not k.startswith("video_")} == {
        k: v for k, v in mean.items() if not k.startswith("video_")}  # frames untouched


# fake video a (5 frames: .9 .1 .1 .1 .9) interleaved with real video b (2 frames: .4 .45)
CAP_LABELS = [1, 0, 1, 1, 0, 1, 1]
CAP_PROBS = [0.9, 0.4, 0.1, 0.1, 0.45, 0.1, 0.9]
CAP_VIDEOS = ["a", "b", "a", "a", "b", "a", "a"]


def test_frames_per_video_scores_evenly_spaced_frames_by_hand():
    full = compute_metrics(CAP_LABELS, CAP_PROBS, CAP_VIDEOS)
    # a: mean 2.1 / 5 = .42 (called real), b: .425: both wrong side, a below b
    assert full["video_acc"] == pytest.approx(0.5) and full["video_auc"] == 0.0
    capped = compute_metrics(CAP_LABELS, CAP_PROBS, CAP_VIDEOS, frames_per_video=3)
    # a: its frames 0, 2, 4 (.9 .1 .9) -> .633; b: both frames (fewer than 3) -> .425
    assert capped["video_acc"] == 1.0 and capped["video_auc"] == 1.0
    assert capped["acc"] == pytest.approx(4 / 7) == full["acc"]  # frame metrics use all 7 frames
    # cap 1: each video's first frame in the given order, a .9 and b .4
    assert compute_metrics(CAP_LABELS, CAP_PROBS, CAP_VIDEOS, frames_per_video=1)["video_acc"] == 1.0
    assert compute_metrics(CAP_LABELS, CAP_PROBS, CAP_VIDEOS, frames_per_video=5) == full  # no video longer


def test_frames_per_video_rounds_the_spacing():
    # 4 frames, cap 3: linspace(0, 3, 3) = 0, 1.5, 3 -> frames 0, 2, 3 (.0 .8 .9): mean .567 (all 4: .45)
    labels, probs, videos = [1, 1, 1, 1, 0], [0.0, 0.1, 0.8, 0.9, 0.6], ["a"] * 4 + ["b"]
    assert compute_metrics(labels, probs, videos)["video_acc"] == 0.0  # a .45 real, b .6 fake
    assert compute_metrics(labels, probs, videos, frames_per_video=3)["video_acc"] == 0.5  # a .567 right


@pytest.mark.parametrize("kwargs, match", [
    ({"video_rule": "median"}, r"video_rule='median' must be one of \['mean', 'max'\]"),
    ({"frames_per_video": 0}, "frames_per_video=0"),
    ({"frames_per_video": 2.5}, "frames_per_video=2.5"),
])
def test_bad_video_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        compute_metrics(LABELS, PROBS, ["a", "a", "b", "b"], **kwargs)
