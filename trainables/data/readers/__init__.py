"""One reader per dataset layout; importing this package registers them all."""
from trainables.data.readers import celebdf, deepfakebench, ffpp, folder, synthetic  # noqa: F401  (registration)
