"""restorekit-train: train and fine-tune restorekit's networks, then export and publish the weights."""
