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
