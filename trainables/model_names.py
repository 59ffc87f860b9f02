"""Model aliases: the paper's families and the timm models that stand for them (the paper
leaves the variant open). Torch-free, so that reading a study's results needs no torch."""
ALIASES = {
    "xception": "legacy_xception",
    "efficientnet": "efficientnet_b0",
    "mobilenet": "mobilenetv3_large_100",
}
