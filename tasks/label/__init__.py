"""The labeling loop: which frames to label, labels in and out, labels worth doubting."""
